"""The chat messages a remote provider sends: the hint is the system prompt, the conversation's earlier turns are
real messages, and the current question goes last with its sources (the rendered prompt)."""

from __future__ import annotations

from chatbot_model.contract import CompletionRequest


def conversation(request: CompletionRequest) -> list[dict[str, str]]:
    """History then the current prompt, as user/assistant messages (no system message)."""
    return [*({"role": m["role"], "content": m["content"]} for m in request.history),
            {"role": "user", "content": request.prompt}]


def openai_messages(request: CompletionRequest) -> list[dict[str, str]]:
    """OpenAI Chat Completions `messages`: the hint as the system message, then `conversation`."""
    return [{"role": "system", "content": request.system}, *conversation(request)]


def anthropic_messages(request: CompletionRequest) -> tuple[str, list[dict[str, str]]]:
    """Anthropic Messages `(system, messages)`."""
    return request.system, conversation(request)
