"""OpenAI Chat Completions through the `openai` SDK's async client; `OPENAI_BASE_URL` points it at any
compatible server (vLLM, Ollama, LiteLLM)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from chatbot_model.errors import ConfigError
from chatbot_model.providers.messages import openai_messages
from chatbot_model.providers.base import Provider, provider_error, token_usage
from chatbot_model.contract import Completion, CompletionRequest


class OpenAIProvider(Provider):
    name = "openai"
    needs_key = True
    key_env_var = "OPENAI_API_KEY"
    key_field = "openai_api_key"
    base_url_env_var = "OPENAI_BASE_URL"
    can_stream = True

    def _make_client(self) -> Any:
        try:
            import openai
        except ImportError as exc:
            raise provider_error("openai: the openai SDK is not installed — pip install openai",
                                 "SDK not installed") from exc
        return openai.AsyncOpenAI(
            api_key=self.api_key(),
            base_url=self.settings.openai_base_url or None,
            timeout=self.settings.provider_timeout_s,  # per read; complete() bounds the whole call
            max_retries=0,  # complete() retries
        )

    def _check_client(self, client: Any) -> None:
        import openai

        if not isinstance(client, openai.AsyncOpenAI):
            raise ConfigError(f"the openai provider needs an openai.AsyncOpenAI client (its calls are cancelled at "
                              f"the deadline), got {type(client).__name__}")

    async def _complete_once(self, request: CompletionRequest) -> Completion:
        response = await self.client.chat.completions.create(
            model=request.model,
            messages=openai_messages(request),
            max_tokens=self.settings.max_answer_tokens,
        )
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise provider_error(f"openai: unreadable reply (no choices in {type(response).__name__}) — is "
                                 "OPENAI_BASE_URL an OpenAI-compatible server?", "unreadable reply",
                                 counts=True) from None
        if not isinstance(text, str) or not text.strip():
            raise provider_error("openai: empty reply — the model returned no text; try again or another model",
                                 "empty reply")
        usage = getattr(response, "usage", None)
        return Completion(
            text=text.strip(),
            provider=self.name,
            model=getattr(response, "model", None) or request.model,
            usage=token_usage(getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)),
        )

    async def _stream_once(self, request: CompletionRequest) -> AsyncIterator[str | Completion]:
        """`stream=True`: the content of each chunk's delta; the last chunk carries the usage."""
        stream = await self.client.chat.completions.create(
            model=request.model,
            messages=openai_messages(request),
            max_tokens=self.settings.max_answer_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        model, usage, finished = None, None, False
        async with stream:  # closes the connection however the iteration ends (cancelled included)
            async for chunk in stream:
                model = getattr(chunk, "model", None) or model
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or ():
                    finished = finished or getattr(choice, "finish_reason", None) is not None
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        yield text
        if not finished:
            raise provider_error("openai: the stream ended without a finish_reason (cut off)", "stream cut off",
                                 counts=True)
        yield Completion(text="", provider=self.name, model=model or request.model,
                         usage=token_usage(getattr(usage, "prompt_tokens", None),
                                           getattr(usage, "completion_tokens", None)))
