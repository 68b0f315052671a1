"""Time for one request: an injectable clock and the deadline shared by retries and fallbacks.

The budget (`CHATBOT_REQUEST_BUDGET_S`) covers the provider phase of a request or batch. Remote providers get
the budget minus `CHATBOT_LOCAL_RESERVE_S`; the local answerer is never skipped for lack of time, so an answer
always comes back within the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


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

    @classmethod
    def start(cls, budget_s: float, local_reserve_s: float = 0.0, clock: Clock = SYSTEM_CLOCK) -> "Deadline":
        """A deadline `budget_s - local_reserve_s` from now."""
        remote = max(0.0, budget_s - local_reserve_s)
        return cls(clock.monotonic() + remote, budget_s, remote, clock)

    def remaining(self) -> float:
        """Seconds left for remote calls and the waits between them (never negative)."""
        return max(0.0, self.expires - self.clock.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0
