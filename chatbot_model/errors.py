"""One small error hierarchy. Messages say what is wrong and how to fix it.

Edges translate: the CLI into `click.ClickException`, the server into 4xx/5xx JSON with `code`,
the pyfunc into `MlflowException(INVALID_PARAMETER_VALUE)`.
"""


class ChatbotError(Exception):
    """Base class; `code` is the stable machine-readable name used by the HTTP API."""

    code = "chatbot_error"


class InvalidInput(ChatbotError):
    """The caller sent something we cannot answer (empty question, wrong type, too long); `field` names it."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class ConfigError(ChatbotError):
    """A setting, a file or a name in the configuration is wrong."""

    code = "config_error"


class ProviderError(ChatbotError):
    """A model provider failed (no key, HTTP error, timeout, unreadable reply)."""

    code = "provider_error"

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class NotFound(ChatbotError):
    """A named thing (model, version, trace) does not exist."""

    code = "not_found"


def unknown_name(kind: str, name: str, choices) -> ConfigError:
    """The one message for every registry lookup miss: "unknown provider 'x'; choose one of [...]"."""
    return ConfigError(f"unknown {kind} {name!r}; choose one of {sorted(choices)}")
