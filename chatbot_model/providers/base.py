"""The provider base class: availability, bounded retries and error translation live here; a provider only
implements `_complete_once` (and `_make_client` when it talks to an SDK)."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from chatbot_model.config import Settings
from chatbot_model.errors import ChatbotError, ProviderError
from chatbot_model.schema import Completion, CompletionRequest

log = logging.getLogger(__name__)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class Provider(ABC):
    """One model backend. `complete()` retries retryable failures and raises only `ProviderError`."""

    name: ClassVar[str]
    needs_key: ClassVar[bool] = True
    key_env_var: ClassVar[str | None] = None
    key_field: ClassVar[str | None] = None  # the Settings field holding the key
    base_url_env_var: ClassVar[str | None] = None
    # backoff between retries (seconds): exponential from retry_wait_min, capped at retry_wait_max;
    # a server's retry-after is honoured up to the cap. Tests may lower these on an instance.
    retry_wait_min: ClassVar[float] = 0.2
    retry_wait_max: ClassVar[float] = 2.0

    def __init__(self, settings: Settings, client: Any | None = None):
        self.settings = settings
        self._client = client
        self._injected = client is not None
        self._client_lock = threading.Lock()

    # the client, made on first use unless injected
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value
        self._injected = value is not None

    def _make_client(self) -> Any:
        """Build the SDK client; import the SDK here, never at module import. Local providers need none."""
        return None

    def api_key(self) -> str | None:
        secret = getattr(self.settings, self.key_field, None) if self.key_field else None
        value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        return value or None

    def available(self) -> tuple[bool, str]:
        """(True, "") when the provider can be called, else (False, reason shown to the user)."""
        if self.needs_key and not self._injected and not self.api_key():
            return False, f"{self.key_env_var} is not set"
        return True, ""

    # answering
    def complete(self, request: CompletionRequest) -> Completion:
        ok, reason = self.available()
        if not ok:
            raise ProviderError(f"{self.name}: {reason} — set it or choose another provider", retryable=False)
        attempts = self.settings.provider_max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        started = time.perf_counter()
        try:
            for attempt in retrying:
                with attempt:
                    completion = self._attempt(request)
        except ProviderError as exc:
            if exc.retryable and attempts > 1:
                raise ProviderError(f"{exc} (gave up after {attempts} attempts)", retryable=True) from exc
            raise
        log.info("provider=%s model=%s latency_ms=%.0f usage=%s", self.name, completion.model,
                 (time.perf_counter() - started) * 1000, completion.usage)
        return completion

    def _attempt(self, request: CompletionRequest) -> Completion:
        try:
            return self._complete_once(request)
        except ProviderError:
            raise
        except ChatbotError as exc:  # e.g. a ConfigError of the embedder: keep its how-to-fix message
            raise ProviderError(f"{self.name}: {exc}", retryable=False) from exc
        except Exception as exc:  # noqa: BLE001 - every SDK/HTTP failure becomes a ProviderError
            raise self._translate(exc, request) from exc

    @abstractmethod
    def _complete_once(self, request: CompletionRequest) -> Completion:
        """One call, no retries. Raise ProviderError for a bad reply; SDK errors are translated by the base."""

    # retries
    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential(multiplier=self.retry_wait_min, min=self.retry_wait_min,
                                   max=self.retry_wait_max)(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return max(0.0, min(float(retry_after), self.retry_wait_max))
        return backoff

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("provider=%s attempt=%d failed (%s); retrying", self.name, state.attempt_number, exc)

    # error translation (duck-typed: the openai and anthropic SDKs share these shapes, and so do httpx errors)
    def _translate(self, exc: Exception, request: CompletionRequest) -> ProviderError:
        status = getattr(exc, "status_code", None)
        kind = type(exc).__name__
        if isinstance(status, int) and status >= 400:
            err = self._http_error(status, exc, request)
            err.retry_after = _retry_after(exc)
            return err
        if isinstance(exc, TimeoutError) or "Timeout" in kind:
            return ProviderError(
                f"{self.name}: timed out after {self.settings.provider_timeout_s:g}s — the server is slow or "
                "unreachable; raise CHATBOT_PROVIDER_TIMEOUT_S or try later", retryable=True)
        if isinstance(exc, ConnectionError) or "Connection" in kind:
            where = f"check {self.base_url_env_var} and the network" if self.base_url_env_var else "check the network"
            return ProviderError(f"{self.name}: cannot connect ({exc}) — {where}", retryable=True)
        if self.base_url_env_var is None:  # not a remote API: a plain failure
            return ProviderError(f"{self.name}: failed ({kind}: {_short(exc)})", retryable=False)
        return ProviderError(
            f"{self.name}: unreadable reply ({kind}: {_short(exc)}) — is the server at {self.base_url_env_var} "
            f"speaking the {self.name} API?", retryable=False)

    def _http_error(self, status: int, exc: Exception, request: CompletionRequest) -> ProviderError:
        detail = _detail(exc)
        if status in (401, 403):
            what = "invalid API key" if status == 401 else "permission denied"
            return ProviderError(f"{self.name}: {status} {what} — check {self.key_env_var}", retryable=False)
        if status == 429:
            return ProviderError(f"{self.name}: 429 rate limited — try again later or raise "
                                 "CHATBOT_PROVIDER_MAX_RETRIES", retryable=True)
        if status in (408, 409) or status >= 500:
            return ProviderError(f"{self.name}: {status} server error ({detail}) — the provider is failing; "
                                 "try again later or use another route", retryable=True)
        if status == 404:
            return ProviderError(f"{self.name}: 404 not found ({detail}) — check the model name "
                                 f"{request.model!r} and the base URL", retryable=False)
        return ProviderError(f"{self.name}: {status} request rejected ({detail}) — check the model name "
                             f"{request.model!r} and the request settings", retryable=False)


def token_usage(prompt_tokens: Any, answer_tokens: Any) -> dict[str, int]:
    """The usage dict of a Completion: input_tokens, output_tokens, total_tokens (empty when unknown)."""
    if not isinstance(prompt_tokens, int) or not isinstance(answer_tokens, int):
        return {}
    return {"input_tokens": prompt_tokens, "output_tokens": answer_tokens, "total_tokens": prompt_tokens + answer_tokens}


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(header)) / divisor
        except (TypeError, ValueError):
            continue
    return None


def _detail(exc: Exception) -> str:
    """The server's own error message when the body carries one (both SDKs keep the parsed body)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _short(inner["message"])
    return _short(getattr(exc, "message", None) or exc)


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
