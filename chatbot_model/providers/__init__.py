"""Model providers. `PROVIDERS` is the one registry: CLI choices, config checks and error messages read it.

SDKs are imported only when a provider makes its client, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

from chatbot_model.config import Settings
from chatbot_model.providers.deadline import Clock
from chatbot_model.errors import unknown_name
from chatbot_model.providers.anthropic import AnthropicProvider
from chatbot_model.providers.base import Provider
from chatbot_model.providers.local import LocalProvider
from chatbot_model.providers.openai import OpenAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "local": LocalProvider,
}


def build_provider(name: str, settings: Settings, client: Any | None = None, *, clock: Clock | None = None) -> Provider:
    """The provider registered as `name`; `client` injects a ready async SDK client (tests, custom transports),
    `clock` the clock of its retries and circuit breaker (tests move time without sleeping)."""
    try:
        cls = PROVIDERS[name]
    except (KeyError, TypeError):
        raise unknown_name("provider", name, PROVIDERS) from None
    return cls(settings, client=client, clock=clock)


__all__ = ["PROVIDERS", "Provider", "build_provider", "AnthropicProvider", "LocalProvider", "OpenAIProvider"]
