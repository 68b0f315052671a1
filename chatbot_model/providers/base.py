"""The provider base class: availability, the circuit breaker, bounded retries inside the request deadline and
error translation live here; a provider only implements `_complete_once` (and `_make_client` for an SDK).

A remote provider writes `async def _complete_once` with an async SDK client: each attempt then runs on the
provider loop (`runner.py`) under a total time limit (not a per-read timeout) and is cancelled, connection and
all, when the limit or the request budget ends. A local provider writes a plain `def` and runs inline, never
skipped for lack of time.

Every `ProviderError` raised here carries `reason`: a short category safe to show to users ("timeout",
"rate limited (429)", "server error (500)", "auth failed (401)", "circuit open until ..."); the upstream
detail stays in the message, which is logged, not returned.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, ClassVar, Iterator

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any, wait_exponential

from chatbot_model.providers.breaker import CircuitBreaker, key_fingerprint
from chatbot_model.config import Settings
from chatbot_model.providers.deadline import SYSTEM_CLOCK, Clock, Deadline
from chatbot_model.errors import ChatbotError, ProviderError
from chatbot_model.providers import runner
from chatbot_model.contract import Completion, CompletionRequest

log = logging.getLogger(__name__)
MIN_ATTEMPT_S = 0.05  # an attempt with less time than this left is not started


def provider_error(message: str, reason: str, *, retryable: bool = False, counts: bool = False,
                   retry_after: float | None = None, skipped: bool = False) -> ProviderError:
    """A ProviderError with its user-facing `reason`; `counts`: a failure the circuit breaker counts;
    `skipped`: no upstream call was made."""
    err = ProviderError(message, retryable=retryable)
    err.reason, err.counts, err.retry_after, err.skipped = reason, counts, retry_after, skipped
    return err


def reason_of(exc: ProviderError) -> str:
    """The short, user-facing reason of a provider error (never the upstream text)."""
    return getattr(exc, "reason", None) or "failed"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class Provider(ABC):
    """One model backend. `complete()` retries retryable failures and raises only `ProviderError`."""

    name: ClassVar[str]
    needs_key: ClassVar[bool] = True
    key_env_var: ClassVar[str | None] = None
    key_field: ClassVar[str | None] = None  # the Settings field holding the key
    base_url_env_var: ClassVar[str | None] = None
    # backoff between retries (seconds): exponential from retry_wait_min, capped at retry_wait_max. A server's
    # Retry-After is honoured up to CHATBOT_RETRY_AFTER_MAX_S instead. Tests may lower these on an instance.
    retry_wait_min: ClassVar[float] = 0.2
    retry_wait_max: ClassVar[float] = 2.0
    can_stream: ClassVar[bool] = False  # True: `_stream_once` yields the reply as it is generated

    def __init__(self, settings: Settings, client: Any | None = None, *, clock: Clock | None = None):
        self.settings = settings
        self.clock = clock or SYSTEM_CLOCK
        self._client = None
        self._client_for: tuple[int, str] | None = None  # (pid, key fingerprint) it was made for
        self._injected = False
        self._client_lock = threading.Lock()
        if client is not None:
            self.client = client
        self.remote = inspect.iscoroutinefunction(self._complete_once)
        self.breaker = CircuitBreaker(self.name, failures=settings.breaker_failures, window_s=settings.breaker_window_s,
                                      cooldown_s=settings.breaker_cooldown_s, clock=self.clock) if self.remote else None

    # the client, made on first use unless injected (and made again in a forked process or for a new key)
    @property
    def client(self) -> Any:
        if self._stale_client():
            with self._client_lock:
                if self._stale_client():
                    self._client, self._client_for = self._make_client(), (os.getpid(), key_fingerprint(self.api_key()))
        return self._client

    def _stale_client(self) -> bool:
        if self._injected:
            return False
        return self._client is None or self._client_for != (os.getpid(), key_fingerprint(self.api_key()))

    @client.setter
    def client(self, value: Any) -> None:
        if value is not None:
            self._check_client(value)
        self._client = value
        self._injected = value is not None

    def _make_client(self) -> Any:
        """Build the SDK client; import the SDK here, never at module import. Local providers need none."""
        return None

    def _check_client(self, client: Any) -> None:
        """Reject an injected client this provider cannot use (a remote provider needs the async client)."""

    def api_key(self) -> str | None:
        secret = getattr(self.settings, self.key_field, None) if self.key_field else None
        value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        return value or None

    def available(self) -> tuple[bool, str]:
        """(True, "") when the provider can be called, else (False, reason shown to the user): no key, circuit
        open, or disabled by a 401/403 until the key changes. No side effects (safe for /health)."""
        if self.needs_key and not self._injected and not self.api_key():
            return False, f"{self.key_env_var} is not set"
        why = self.breaker.blocked(self.api_key()) if self.breaker else None
        return (False, why) if why else (True, "")

    def status(self) -> str:
        """One line for /health: "ready", or why calls are refused."""
        ok, why = self.available()
        if ok and self.breaker is not None and self.breaker.state(self.api_key()) == "half-open":
            return "ready (circuit half-open: the next request probes)"
        return "ready" if ok else why

    # answering
    def complete(self, request: CompletionRequest, deadline: Deadline | None = None) -> Completion:
        """One answer. A remote provider stays within `deadline` (the request budget shared with the fallbacks;
        a fresh CHATBOT_REQUEST_BUDGET_S when None)."""
        self._check_key()
        started = time.perf_counter()
        if not self.remote:
            completion = self._attempt(request, None)
        else:
            completion = self._complete_remote(request, deadline or Deadline.start(
                self.settings.request_budget_s, self.settings.local_reserve_s, self.clock))
        log.info("provider=%s model=%s latency_ms=%.0f usage=%s", self.name, completion.model,
                 (time.perf_counter() - started) * 1000, completion.usage)
        return completion

    def _check_key(self) -> None:
        if self.needs_key and not self._injected and not self.api_key():
            why = f"{self.key_env_var} is not set"
            raise provider_error(f"{self.name}: {why} — set it or choose another provider", why, skipped=True)

    def stream(self, request: CompletionRequest, deadline: Deadline | None = None) -> Iterator[str | Completion]:
        """The answer as it is generated: pieces of text, then the whole `Completion` (text, model, usage).

        Retries, the circuit breaker and the deadline work as in `complete()` until the first piece of text has
        arrived; a failure after it raises ProviderError mid-stream, without retry (the caller may have passed
        text on already). Closing the generator early cancels the upstream call and frees its connection. A
        provider that cannot stream (`can_stream` False) yields its whole answer as one piece."""
        if not self.can_stream:
            completion = self.complete(request, deadline)
            yield completion.text
            yield completion
            return
        self._check_key()
        deadline = deadline or Deadline.start(self.settings.request_budget_s, self.settings.local_reserve_s,
                                              self.clock)
        started, limits = time.perf_counter(), {}

        def opener(limit: float, attempt_limits: tuple) -> tuple[runner.Stream, str]:
            stream = runner.Stream(lambda: self._stream_once(request), limit, deadline)
            try:
                first = next(stream, None)
            except BaseException:
                stream.close()
                raise
            if not isinstance(first, str):
                stream.close()
                raise provider_error(f"{self.name}: empty reply — the model returned no text; try again or another "
                                     "model", "empty reply")
            limits["attempt"] = attempt_limits
            return stream, first

        stream, first = self._complete_remote(request, deadline, opener)
        parts, final = [first], None
        try:
            yield first
            for item in stream:
                if isinstance(item, Completion):
                    final = item
                    continue
                parts.append(item)
                yield item
        except Exception as exc:  # noqa: BLE001 - a failure mid-stream (GeneratorExit is not one)
            err = self._failure(exc, request, deadline, limits["attempt"])
            self._judge(err)
            raise err from exc
        finally:
            stream.close()
        completion = Completion(text="".join(parts).strip(), provider=self.name,
                                model=(final.model if final else "") or request.model,
                                usage=final.usage if final else {})
        log.info("provider=%s model=%s streamed latency_ms=%.0f usage=%s", self.name, completion.model,
                 (time.perf_counter() - started) * 1000, completion.usage)
        yield completion

    async def _stream_once(self, request: CompletionRequest) -> AsyncIterator[str | Completion]:
        """One streamed call (`can_stream` providers): non-empty text pieces, then a Completion carrying the
        model and usage (its text is ignored). Raise like `_complete_once`."""
        raise NotImplementedError
        yield  # pragma: no cover - makes this an async generator

    def _complete_remote(self, request: CompletionRequest, deadline: Deadline, opener=None) -> Any:
        why = self.breaker.admit(self.api_key())
        if why is not None:
            raise provider_error(f"{self.name}: skipped, {why}", why, skipped=True)
        attempts = self.settings.provider_max_retries + 1
        retrying = Retrying(
            stop=stop_any(lambda state: self._stop(state, deadline), stop_after_attempt(attempts)),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=self._log_retry,
            sleep=self.clock.sleep,
            reraise=True,
        )
        tried = 0
        try:
            for attempt in retrying:
                with attempt:
                    tried += 1
                    return self._attempt(request, deadline, opener)
        except ProviderError as exc:
            if exc.retryable and tried > 1 and not getattr(exc, "skipped", False):
                raise provider_error(f"{exc} (gave up after {tried} attempts)", f"{reason_of(exc)} x{tried}",
                                     retryable=True) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, request: CompletionRequest, deadline: Deadline | None, opener=None) -> Any:
        """One attempt within its time limit; `opener(limit)` replaces the plain call (streaming opens a stream)."""
        limit, cut_by_budget, fair = self.settings.provider_timeout_s, False, self.settings.provider_timeout_s
        if deadline is not None:
            left = deadline.remaining()
            if deadline.cancelled.is_set():
                self.breaker.release()
                raise provider_error(f"{self.name}: not called, the request was cancelled", "cancelled",
                                     skipped=True)
            if left < MIN_ATTEMPT_S:
                self.breaker.release()
                budget = f"request budget {deadline.budget_s:g}s"
                raise provider_error(f"{self.name}: no time left in the {budget}", f"no time left ({budget})",
                                     skipped=True)
            limit, cut_by_budget, fair = min(limit, left), left < limit, min(limit, deadline.remote_s)
        try:
            if opener is not None:
                self.client  # made (SDK imported) outside the time limit of the call
                completion = opener(limit, (limit, cut_by_budget, fair))
            elif self.remote:
                self.client  # made (SDK imported) outside the time limit of the call
                completion = runner.run(lambda: self._complete_once(request), limit, deadline)
            else:
                completion = self._complete_once(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ProviderError
            err = self._failure(exc, request, deadline, (limit, cut_by_budget, fair))
            self._judge(err)
            if err is exc:
                raise
            raise err from exc
        if self.breaker:
            self.breaker.success()
        return completion

    def _failure(self, exc: Exception, request: CompletionRequest, deadline: Deadline | None,
                 limits: tuple[float, bool, float]) -> ProviderError:
        """The ProviderError of a failed call; `limits`: (time limit, cut by the budget, fair limit)."""
        limit, cut_by_budget, fair = limits
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, ChatbotError):  # e.g. a ConfigError of the embedder: keep its how-to-fix message
            return provider_error(f"{self.name}: {exc}", str(exc))
        if isinstance(exc, TimeoutError):  # the total time limit of the attempt, or the request was cancelled
            if deadline is not None and deadline.cancelled.is_set():
                return provider_error(f"{self.name}: call cancelled with the request", "cancelled")
            # a call cut short by the budget counts against the provider only when it had a fair chance
            # (at least half of its limit): a hang counts, the leftovers of a fallback do not
            return self._timeout(limit, cut_by_budget, counts=limit >= fair / 2)
        return self._translate(exc, request)

    def _judge(self, err: ProviderError) -> None:
        """Tell the breaker what an attempt's failure says about the provider."""
        if self.breaker is None:
            return
        if getattr(err, "auth", False):
            self.breaker.disable(reason_of(err), self.api_key())
        elif getattr(err, "counts", False):
            self.breaker.failure(reason_of(err))
        elif getattr(err, "reason", "") in ("timeout", "cancelled"):
            self.breaker.release()  # cut short by the request budget or cancelled: no verdict
        else:
            self.breaker.success()  # it replied (a 4xx of our own making): alive

    @abstractmethod
    def _complete_once(self, request: CompletionRequest) -> Completion:
        """One call, no retries (`async def` for a remote provider). Raise ProviderError for a bad reply; SDK
        errors are translated by the base."""

    # retries
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return retry_after if retry_after <= self.settings.retry_after_max_s else math.inf
        return wait_exponential(multiplier=self.retry_wait_min, min=self.retry_wait_min, max=self.retry_wait_max)(state)

    def _stop(self, state: RetryCallState, deadline: Deadline) -> bool:
        """Stop early when the wait would not leave time for another attempt, the server asked for a longer
        wait than we honour, or the circuit opened meanwhile."""
        wait = state.upcoming_sleep
        exc = state.outcome.exception() if state.outcome else None
        if wait + MIN_ATTEMPT_S >= deadline.remaining():
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:  # Retry-After beyond the cap or the budget: skip it until then
                self.breaker.hold(retry_after, f"{reason_of(exc)}, Retry-After {retry_after:g}s")
            return True
        return self.breaker.blocked(self.api_key()) is not None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("provider=%s attempt=%d failed (%s); retrying in %.2fs", self.name, state.attempt_number, exc,
                    state.upcoming_sleep)

    # error translation (duck-typed: the openai and anthropic SDKs share these shapes, and so do httpx errors)
    def _timeout(self, limit: float, cut_by_budget: bool, counts: bool = True) -> ProviderError:
        if cut_by_budget:
            return provider_error(f"{self.name}: timed out, cut off after {limit:.2f}s at the end of the request "
                                  "budget (CHATBOT_REQUEST_BUDGET_S)", "timeout", retryable=True, counts=counts)
        return provider_error(f"{self.name}: timed out, no complete reply within {limit:g}s — the server is slow or "
                              "unreachable; raise CHATBOT_PROVIDER_TIMEOUT_S or try later", "timeout",
                              retryable=True, counts=True)

    def _translate(self, exc: Exception, request: CompletionRequest) -> ProviderError:
        status = getattr(exc, "status_code", None)
        kind = type(exc).__name__
        if isinstance(status, int) and status >= 400:
            return self._http_error(status, exc, request)
        if isinstance(exc, TimeoutError) or "Timeout" in kind:
            return self._timeout(self.settings.provider_timeout_s, False)  # the SDK's per-read timeout
        if isinstance(exc, ConnectionError) or "Connection" in kind:
            where = f"check {self.base_url_env_var} and the network" if self.base_url_env_var else "check the network"
            return provider_error(f"{self.name}: cannot connect ({_short(exc)}) — {where}", "connection failed",
                                  retryable=True, counts=True)
        if self.base_url_env_var is None:  # not a remote API: a plain failure
            return provider_error(f"{self.name}: failed ({kind}: {_short(exc)})", "failed")
        return provider_error(
            f"{self.name}: unreadable reply ({kind}: {_short(exc)}) — is the server at {self.base_url_env_var} "
            f"speaking the {self.name} API?", "unreadable reply", counts=True)

    def _http_error(self, status: int, exc: Exception, request: CompletionRequest) -> ProviderError:
        detail = _detail(exc)
        if status in (401, 403):
            what = "invalid API key" if status == 401 else "permission denied"
            err = provider_error(f"{self.name}: {status} {what} ({detail}) — check {self.key_env_var}",
                                 f"auth failed ({status}), check {self.key_env_var}")
            err.auth = True
            return err
        if status == 429:
            return provider_error(f"{self.name}: 429 rate limited ({detail}) — try again later",
                                  "rate limited (429)", retryable=True, counts=True, retry_after=_retry_after(exc))
        if status in (408, 409) or status >= 500:
            return provider_error(f"{self.name}: {status} server error ({detail}) — the provider is failing; "
                                  "try again later or use another route", f"server error ({status})",
                                  retryable=True, counts=True, retry_after=_retry_after(exc))
        if status == 404:
            return provider_error(f"{self.name}: 404 not found ({detail}) — check the model name "
                                  f"{request.model!r} and the base URL", "not found (404)")
        return provider_error(f"{self.name}: {status} request rejected ({detail}) — check the model name "
                              f"{request.model!r} and the request settings", f"request rejected ({status})")


def token_usage(prompt_tokens: Any, answer_tokens: Any) -> dict[str, int]:
    """The usage dict of a Completion: input_tokens, output_tokens, total_tokens (empty when unknown)."""
    if not isinstance(prompt_tokens, int) or not isinstance(answer_tokens, int):
        return {}
    return {"input_tokens": prompt_tokens, "output_tokens": answer_tokens, "total_tokens": prompt_tokens + answer_tokens}


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` in seconds or as an HTTP date; None if absent."""
    if not headers:
        return None
    try:
        return max(0.0, float(headers.get("retry-after-ms")) / 1000.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _retry_after(exc: Exception) -> float | None:
    return parse_retry_after(getattr(getattr(exc, "response", None), "headers", None))


def _detail(exc: Exception) -> str:
    """The server's own error message when the body carries one (both SDKs keep the parsed body); for logs."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _short(inner["message"])
    return _short(getattr(exc, "message", None) or exc)


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
