"""ControlHintAdapter: the hint that opens every system prompt, and how feedback changes it.

- Default: the text of `artifacts/adapter_hint.txt`, "Answer in a helpful, concise, and knowledge-sharing way".
- Thumbs down: switch to the grounded hint, "Be more factual, detailed, and knowledge-grounded".
- Thumbs up: keep the current hint (what was just rated good stays); it never flips the hint by itself.
`reset()` returns to the default. The learned hint is what `adapt` logs as the next model's `adapter_hint.txt`.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path

from chatbot_model.errors import ConfigError

# a hint that replaces the current one for the request being served in this context (the OpenAI-compatible API
# with CHATBOT_ALLOW_CLIENT_SYSTEM_PROMPT on); None: the adapter's hint
REQUEST_HINT: ContextVar[str | None] = ContextVar("chatbot_request_hint", default=None)

DEFAULT_HINT = "Answer in a helpful, concise, and knowledge-sharing way"
GROUNDED_HINT = "Be more factual, detailed, and knowledge-grounded"


def read_hint(path: str | Path) -> str:
    """The hint in `path` (first non-empty content, stripped); a missing or empty file is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the hint file {path}: {exc.strerror}; set CHATBOT_HINT_PATH "
                          "to a text file holding the system-prompt hint") from None
    if not text:
        raise ConfigError(f"the hint file {path} is empty; write the system-prompt hint into it")
    return text


class ControlHintAdapter:
    """Holds the active hint; `feedback()` applies one rating."""

    def __init__(self, hint: str = DEFAULT_HINT):
        self.default_hint = hint
        self.hint = hint

    @classmethod
    def from_file(cls, path: str | Path) -> "ControlHintAdapter":
        return cls(read_hint(path))

    def feedback(self, positive: bool) -> str:
        """Down -> the grounded hint; up -> unchanged. Returns the active hint."""
        if not positive:
            self.hint = GROUNDED_HINT
        return self.hint

    def reset(self) -> str:
        self.hint = self.default_hint
        return self.hint
