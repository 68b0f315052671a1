"""Anthropic Messages API through the `anthropic` SDK's async client; `ANTHROPIC_BASE_URL` points it at another
server."""

from __future__ import annotations

from typing import Any, AsyncIterator

from chatbot_model.errors import ConfigError
from chatbot_model.providers.messages import anthropic_messages
from chatbot_model.providers.base import Provider, provider_error, token_usage
from chatbot_model.contract import Completion, CompletionRequest


class AnthropicProvider(Provider):
    name = "anthropic"
    needs_key = True
    key_env_var = "ANTHROPIC_API_KEY"
    key_field = "anthropic_api_key"
    base_url_env_var = "ANTHROPIC_BASE_URL"
    can_stream = True

    def _make_client(self) -> Any:
        try:
            import anthropic
        except ImportError as exc:
            raise provider_error("anthropic: the anthropic SDK is not installed — pip install anthropic",
                                 "SDK not installed") from exc
        return anthropic.AsyncAnthropic(
            api_key=self.api_key(),  # explicit: the SDK then ignores profiles and other env credentials
            base_url=self.settings.anthropic_base_url or None,
            timeout=self.settings.provider_timeout_s,  # per read; complete() bounds the whole call
            max_retries=0,  # complete() retries
        )

    def _check_client(self, client: Any) -> None:
        import anthropic

        if not isinstance(client, anthropic.AsyncAnthropic):
            raise ConfigError(f"the anthropic provider needs an anthropic.AsyncAnthropic client (its calls are "
                              f"cancelled at the deadline), got {type(client).__name__}")

    async def _complete_once(self, request: CompletionRequest) -> Completion:
        system, messages = anthropic_messages(request)
        response = await self.client.messages.create(
            model=request.model,
            system=system,
            messages=messages,
            max_tokens=self.settings.max_answer_tokens,
        )
        blocks = getattr(response, "content", None)
        if not isinstance(blocks, list):
            raise provider_error(f"anthropic: unreadable reply (no content in {type(response).__name__}) — is "
                                 "ANTHROPIC_BASE_URL an Anthropic-compatible server?", "unreadable reply",
                                 counts=True)
        text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text" and isinstance(b.text, str))
        if not text.strip():
            raise provider_error("anthropic: empty reply — the model returned no text; try again or another model",
                                 "empty reply")
        usage = getattr(response, "usage", None)
        return Completion(
            text=text.strip(),
            provider=self.name,
            model=getattr(response, "model", None) or request.model,
            usage=token_usage(getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)),
        )

    async def _stream_once(self, request: CompletionRequest) -> AsyncIterator[str | Completion]:
        """`stream=True`: the text of each `content_block_delta`; `message_start` and `message_delta` carry the
        model and the usage."""
        system, messages = anthropic_messages(request)
        stream = await self.client.messages.create(
            model=request.model,
            system=system,
            messages=messages,
            max_tokens=self.settings.max_answer_tokens,
            stream=True,
        )
        model, tokens_in, tokens_out, finished = None, None, None, False
        async with stream:  # closes the connection however the iteration ends (cancelled included)
            async for event in stream:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    model = getattr(event.message, "model", None)
                    tokens_in = getattr(getattr(event.message, "usage", None), "input_tokens", None)
                elif kind == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
                    if event.delta.text:
                        yield event.delta.text
                elif kind == "message_delta":
                    tokens_out = getattr(getattr(event, "usage", None), "output_tokens", tokens_out)
                elif kind == "message_stop":
                    finished = True
        if not finished:
            raise provider_error("anthropic: the stream ended without message_stop (cut off)", "stream cut off",
                                 counts=True)
        yield Completion(text="", provider=self.name, model=model or request.model,
                         usage=token_usage(tokens_in, tokens_out))
