"""A per-client rate limit (token bucket) for /feedback: one client cannot flood the ratings the router learns
from. The client is the API key's fingerprint and the peer address (run uvicorn with --forwarded-allow-ips set
to the ingress so the address is the caller's, not the proxy's). Limits are per process: N replicas allow N
times the rate in all."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Callable

from chatbot_model.server.deps import settings_of
from chatbot_model.server.errors import ServerError
from chatbot_model.server.sessions import caller_of


class RateLimited(ServerError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class RateLimiter:
    """`rate` requests per `per_s` seconds per client, in bursts of at most `rate`; remembers at most
    `max_clients` clients (the least recently seen are forgotten). Thread-safe; `clock` is injectable."""

    def __init__(self, rate: int, per_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000):
        self.rate, self.per_s, self.clock, self.max_clients = rate, per_s, clock, max_clients
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: object) -> float:
        """0 when the request may go ahead (a token is taken), else the seconds until the next token."""
        if self.rate <= 0:
            return 0.0
        now, refill = self.clock(), self.rate / self.per_s
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - at) * refill)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / refill
            self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


def feedback_limiter(app) -> RateLimiter:
    limiter = getattr(app.state, "feedback_limiter", None)
    if limiter is None:
        limiter = app.state.feedback_limiter = RateLimiter(settings_of(app).feedback_rate_per_minute)
    return limiter


async def limit_feedback(request) -> None:
    """429 `rate_limited` with Retry-After once this client sent CHATBOT_FEEDBACK_RATE_PER_MINUTE ratings."""
    client = (caller_of(request), request.client.host if request.client else "")
    wait = feedback_limiter(request.app).acquire(client)
    if wait:
        raise RateLimited(f"too many ratings from this client (CHATBOT_FEEDBACK_RATE_PER_MINUTE="
                          f"{feedback_limiter(request.app).rate}); retry in {math.ceil(wait)} s", wait)
