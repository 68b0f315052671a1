"""Time for one request: an injectable clock and the deadline shared by retries and fallbacks.

The budget (`CHATBOT_REQUEST_BUDGET_S`) covers the provider phase of a request or batch. Remote providers get
the budget minus `CHATBOT_LOCAL_RESERVE_S`; the local answerer is never skipped for lack of time, so an answer
always comes back within the budget. `Deadline.cancel()` (a server whose client hung up) ends the remote part
at once: the running upstream call is cancelled and no other starts. `REQUEST_DEADLINE` carries a server's
deadline to the service through layers that cannot pass it (the pyfunc's `predict`, MLflow's `predict_stream`).
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Protocol


class Clock(Protocol):
    """What the deadline, the retry waits and the circuit breaker read; tests inject a fake one."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wall(self) -> float: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wall(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


@dataclass
class Deadline:
    """When remote provider calls of one request must be over (a monotonic time of `clock`)."""

    expires: float
    budget_s: float  # the whole request budget
    remote_s: float  # its part for remote calls (budget minus the local reserve)
    clock: Clock = SYSTEM_CLOCK
    cancelled: threading.Event = field(default_factory=threading.Event)
    _on_cancel: list[Callable[[], object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, budget_s: float, local_reserve_s: float = 0.0, clock: Clock = SYSTEM_CLOCK) -> "Deadline":
        """A deadline `budget_s - local_reserve_s` from now."""
        remote = max(0.0, budget_s - local_reserve_s)
        return cls(clock.monotonic() + remote, budget_s, remote, clock)

    def remaining(self) -> float:
        """Seconds left for remote calls and the waits between them (never negative; 0 once cancelled)."""
        if self.cancelled.is_set():
            return 0.0
        return max(0.0, self.expires - self.clock.monotonic())

    def cancel(self) -> None:
        """End the remote part now (the client went away): running calls are cancelled, no new one starts."""
        with self._lock:
            self.cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run `callback` at `cancel()` (at once if already cancelled); returns a function that unregisters it."""
        with self._lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._on_cancel:
                self._on_cancel.remove(callback)


# the deadline of the request being served in this context (set by the HTTP server); the service uses it when
# no deadline is passed explicitly
REQUEST_DEADLINE: ContextVar[Deadline | None] = ContextVar("chatbot_request_deadline", default=None)
