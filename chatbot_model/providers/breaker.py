"""A circuit breaker per remote provider (cooldowns in the manner of LiteLLM's router).

- closed: calls pass; counted failures (timeouts, 5xx, 429, broken connections, unreadable replies) are kept
  for `window_s`; `failures` of them in the window open the circuit.
- open: calls are skipped (no upstream request) until the cooldown ends; a `Retry-After` the provider asked
  for and that we would not wait (`hold`) opens it until then.
- half-open: after the cooldown one request is let through as a probe; success closes the circuit, a failure
  opens it again. Other requests are skipped while the probe runs.
- unavailable: 401/403 disable the provider with the reason until its API key changes.

Counters of opens, probes and skips are kept per breaker and as process totals (`breaker_totals`);
`BreakerCollector` exports the totals to a Prometheus registry (prometheus-client is imported only there).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, deque

from chatbot_model.providers.deadline import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
EVENTS = ("opens", "probes", "skips")
_totals: Counter = Counter()  # (provider, event) -> count, over every breaker of this process
_totals_lock = threading.Lock()


def breaker_totals() -> dict[tuple[str, str], int]:
    """Process-wide counts: {(provider, "opens" | "probes" | "skips"): n}; monotonic, for /metrics."""
    with _totals_lock:
        return dict(_totals)


def key_fingerprint(key: str | None) -> str:
    """A short digest of an API key: enough to notice that it changed, useless to anyone reading it."""
    return hashlib.sha256((key or "").encode()).hexdigest()[:16]


class CircuitBreaker:
    """Thread-safe breaker of one provider; `clock` is injectable so tests move time without sleeping."""

    def __init__(self, name: str, *, failures: int = 5, window_s: float = 60.0, cooldown_s: float = 30.0,
                 clock: Clock = SYSTEM_CLOCK):
        self.name, self.failures, self.window_s, self.cooldown_s = name, failures, window_s, cooldown_s
        self.clock = clock
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()  # times of counted failures in the window
        self._open_until: float | None = None
        self._why = ""  # the last failure that opened it
        self._probing = False
        self._disabled: tuple[str, str] | None = None  # (reason, fingerprint of the key that failed)

    # state -----------------------------------------------------------------------------------------------
    def state(self, key: str | None = None) -> str:
        """"closed", "open", "half-open" or "unavailable"."""
        with self._lock:
            return self._state(key)

    def _state(self, key: str | None) -> str:
        if self._disabled is not None:
            if self._disabled[1] == key_fingerprint(key):
                return "unavailable"
            log.info("provider=%s key changed; enabled again", self.name)
            self._disabled = None
        if self._open_until is None:
            return "closed"
        return "open" if self.clock.monotonic() < self._open_until else "half-open"

    def blocked(self, key: str | None = None) -> str | None:
        """Why calls are refused right now (None: they pass). No side effects: safe for /health."""
        with self._lock:
            return self._blocked(self._state(key))

    def _blocked(self, state: str) -> str | None:
        if state == "unavailable":
            return f"{self._disabled[0]}; unavailable until the key changes"
        if state == "open":
            left = self._open_until - self.clock.monotonic()
            until = time.strftime("%H:%M:%S", time.gmtime(self.clock.wall() + left))
            return f"circuit open until {until} UTC ({self._why})"
        if state == "half-open" and self._probing:
            return "circuit half-open, a probe is running"
        return None

    def admit(self, key: str | None = None) -> str | None:
        """Claim a call: None lets it through (as the probe when half-open); else the reason, counted as a skip."""
        with self._lock:
            state = self._state(key)
            why = self._blocked(state)
            if why is not None:
                self._count("skips")
                return why
            if state == "half-open":
                self._probing = True
                self._count("probes")
                log.info("provider=%s circuit half-open: probing", self.name)
            return None

    # outcomes --------------------------------------------------------------------------------------------
    def success(self) -> None:
        """The provider answered (or at least replied): close the circuit."""
        with self._lock:
            if self._open_until is not None:
                log.info("provider=%s circuit closed", self.name)
            self._open_until, self._probing = None, False
            self._recent.clear()

    def release(self) -> None:
        """The call ended without a verdict (cut short by the request budget): let another probe run."""
        with self._lock:
            self._probing = False

    def failure(self, reason: str) -> bool:
        """A counted failure; returns True when it opened the circuit."""
        with self._lock:
            now = self.clock.monotonic()
            if self._probing:  # the probe failed: open again
                self._probing = False
                self._open(now + self.cooldown_s, f"probe failed: {reason}")
                return True
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - self.window_s:
                self._recent.popleft()
            already_open = self._open_until is not None and now < self._open_until
            if len(self._recent) >= self.failures and not already_open:
                n = len(self._recent)
                self._open(now + self.cooldown_s, f"{n} failure{'s' if n > 1 else ''} in {self.window_s:g}s, "
                           f"last {reason}")
                return True
            return False

    def hold(self, seconds: float, reason: str) -> None:
        """Skip the provider for `seconds` (it asked for that with Retry-After)."""
        with self._lock:
            self._probing = False
            until = self.clock.monotonic() + seconds
            if self._open_until is None or until > self._open_until:
                self._open(until, reason)

    def disable(self, reason: str, key: str | None) -> None:
        """401/403: unavailable with `reason` until the key is no longer `key`."""
        with self._lock:
            self._probing = False
            if self._disabled is None:
                self._count("opens")
            self._disabled = (reason, key_fingerprint(key))
            log.warning("provider=%s disabled: %s", self.name, reason)

    def _open(self, until: float, why: str) -> None:
        self._open_until, self._why = until, why
        self._recent.clear()
        self._count("opens")
        log.warning("provider=%s circuit open for %.0fs: %s", self.name, until - self.clock.monotonic(), why)

    def _count(self, event: str) -> None:
        self.counts[event] += 1
        with _totals_lock:
            _totals[(self.name, event)] += 1


class BreakerCollector:
    """A Prometheus collector of `breaker_totals()`: `registry.register(BreakerCollector())`."""

    HELP = {"opens": "times a provider's circuit opened (failures, Retry-After or 401/403)",
            "probes": "half-open probe requests sent to a provider",
            "skips": "provider calls skipped because its circuit was open"}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        totals = breaker_totals()
        for event in EVENTS:
            family = CounterMetricFamily(f"chatbot_provider_breaker_{event}", self.HELP[event], labels=["provider"])
            for (provider, kind), value in sorted(totals.items()):
                if kind == event:
                    family.add_metric([provider], value)
            yield family
