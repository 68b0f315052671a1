"""Rollouts from the registry: the in-process backend follows the alias it serves, without a restart.

An `AliasFollower` serves one registry URI (`models:/NAME@production`). `poll()` asks the registry where the URI
points now; when it moved, the new version is loaded in a background thread (`models:/NAME/N`, with
`model_config={"model_version": N}` so its answers and ratings carry it), warmed with one real question
(`WARMUP_QUESTION`), then swapped in by replacing one reference under a lock:

- a request takes the version current when it starts (`use()`) and finishes on it, even if a swap happens;
- requests after the swap get the new version; none waits for the load (it happens beside them);
- the old version is released when its last in-flight request ends: its service's worker pool is shut down,
  its references dropped, `gc.collect()` and glibc's `malloc_trim` return the memory to the system.

A version that fails to load or warm is not swapped in: the old one keeps serving, `status()["failed"]` (on
/health) and `chatbot_model_rollout_failed{role}` (on /metrics) say so, and it is retried with a backoff
(one poll interval, doubling, at most an hour) in case the failure was transient; moving the alias elsewhere
ends the retries.

Champion / challenger: with CHATBOT_CHALLENGER_ALIAS a second follower serves that alias to the sessions whose
`session_id` hashes below CHATBOT_CHALLENGER_SHARE (`assign`; sticky: the same session always gets the same
side). A request without a session_id goes to the champion. When both aliases point at the same version the
challenger holds nothing and everyone gets the champion.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from chatbot_model.config import mask_secrets
from chatbot_model.errors import NotFound
from chatbot_model.lifecycle.model_uri import resolve_version

log = logging.getLogger(__name__)

WARMUP_QUESTION = "What is MLflow used for?"
MAX_RETRY_S = 3600.0


@dataclass
class Loaded:
    """One loaded model version and the requests it is answering."""

    version: str | None
    model: Any
    in_flight: int = 0
    retired: bool = False  # swapped out: released when in_flight reaches 0


@dataclass
class FailedLoad:
    version: str
    error: str
    attempts: int
    retry_at: float  # clock() time after which a poll may try it again


def assign(session_id: str | None, share: float) -> bool:
    """True when this session belongs to the challenger's share: sha256 of the id as a number in [0, 1).
    Sticky across requests, processes and replicas; no session id: the champion."""
    if not session_id or share <= 0:
        return False
    point = int.from_bytes(hashlib.sha256(session_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return point < share


def warm(model) -> None:
    """Answer one real question; raise when the model cannot (the version is then not swapped in)."""
    import pandas as pd

    frame = model.predict(pd.DataFrame({"question": [WARMUP_QUESTION]}))
    rows = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame)
    if len(rows) != 1:
        raise RuntimeError(f"the warm-up question got {len(rows)} rows instead of 1")
    if rows[0].get("error") or not rows[0].get("answer"):
        raise RuntimeError(f"the warm-up question was not answered: {rows[0].get('error') or 'empty answer'}")


def release(model) -> None:
    """Let a swapped-out version go: close its service (worker pool, feedback store connections), drop it, and
    hand the freed memory back to the system."""
    python_model = model
    with contextlib.suppress(Exception):
        python_model = model.unwrap_python_model()
    service = getattr(python_model, "service", None)
    for owner in (python_model, service) if service is not python_model else (python_model,):
        close = getattr(owner, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    del model, python_model, service
    gc.collect()
    trim_memory()


def trim_memory() -> None:
    """glibc keeps freed heap pages; `malloc_trim(0)` returns them (a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def registry_loader(name: str) -> Callable[[str], Any]:
    """Load version N of a registered model with its version in the model config."""
    def load(version: str):
        import mlflow

        return mlflow.pyfunc.load_model(f"models:/{name}/{version}", model_config={"model_version": version})
    return load


def registry_resolver(uri: str) -> Callable[[], str | None]:
    """Where a `models:/` URI points now: a version number, None when the alias is gone; raises when the
    registry cannot say (unreachable)."""
    def resolve() -> str | None:
        try:
            return resolve_version(uri)
        except NotFound:  # the alias (or the model) is gone
            return None
    return resolve


class AliasFollower:
    """Serves the version one registry URI points at, and follows it (see the module docstring).

    `loader(version)` and `resolver()` are injectable; so are `clock` (retry backoff) and `warmer`."""

    def __init__(self, uri: str, role: str, *, loader: Callable[[str], Any], resolver: Callable[[], str | None],
                 poll_s: float = 30.0, warmer: Callable[[Any], None] = warm, clock: Callable[[], float] = time.monotonic,
                 idle_when: Callable[[], str | None] | None = None, fallback: "AliasFollower | None" = None):
        self.uri, self.role, self.poll_s = uri, role, poll_s
        self.loader, self.resolver, self.warmer, self.clock = loader, resolver, warmer, clock
        self.idle_when = idle_when  # challenger: the champion's version (nothing to load when the same)
        self.fallback = fallback  # challenger: the champion answers when it holds nothing (retired after a pick)
        self.current: Loaded | None = None
        self.target: str | None = None  # where the URI pointed at the last poll
        self.loading: str | None = None
        self.failed: FailedLoad | None = None
        self.poll_error: str | None = None
        self.last_poll_at: float | None = None
        self.polls = 0
        self.swap_poll: int | None = None  # the poll that started loading the version serving now
        self.swaps = 0
        self.failures = 0
        self.released = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- serving
    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current else None

    @contextlib.contextmanager
    def use(self) -> Iterator[Loaded]:
        """The version current now, held until the block ends (a swap meanwhile does not release it); the
        fallback's when this follower holds none (a challenger retired between the pick and the request)."""
        with self._lock:
            loaded = self.current
            if loaded is not None:
                loaded.in_flight += 1
        if loaded is None:
            if self.fallback is None:
                raise LookupError(f"{self.role}: no version loaded")
            with self.fallback.use() as held:
                yield held
            return
        try:
            yield loaded
        finally:
            with self._lock:
                loaded.in_flight -= 1
                done = loaded.retired and loaded.in_flight == 0
            if done:
                self._release(loaded)

    # ---------------------------------------------------------------- loading and swapping
    def start(self, version: str | None, model: Any = None, *, warm_it: bool = True) -> None:
        """The first version (the backend's load, in its retrying worker thread): load, warm, serve."""
        if model is None:
            model = self.loader(version)
            if warm_it:
                self.warmer(model)
        self.target = version
        self._swap(Loaded(version, model))

    def poll(self) -> threading.Thread | None:
        """Ask the registry where the URI points; start loading a new target in the background. Returns the
        loading thread (tests join it), or None when there is nothing to do."""
        self.last_poll_at = self.clock()
        self.polls += 1
        try:
            target = self.resolver()
        except Exception as exc:  # noqa: BLE001 - the registry is down or the alias was deleted: keep serving
            self.poll_error = mask_secrets(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("%s: cannot resolve %s (%s); %s keeps serving", self.role, self.uri, self.poll_error,
                        self.version)
            return None
        self.poll_error, self.target = None, target
        if target is None:
            if self.idle_when is not None:  # the challenger's alias was removed: no challenger any more
                self._retire_current()
            elif self.version is not None:
                self.poll_error = f"{self.uri} points at no version; version {self.version} keeps serving"
            return None
        if self.idle_when is not None and target == self.idle_when():
            self._retire_current()  # both aliases on one version: nothing to compare, nothing to hold twice
            return None
        if target == self.version or self.loading is not None:
            return None
        failed = self.failed
        if failed and failed.version == target and self.clock() < failed.retry_at:
            return None
        self.loading = target
        self._thread = threading.Thread(target=self._load_and_swap, args=(target, self.polls),
                                        name=f"rollout-{self.role}", daemon=True)
        self._thread.start()
        return self._thread

    def _load_and_swap(self, version: str, poll: int | None = None) -> None:
        started = time.perf_counter()
        try:
            model = self.loader(version)
            self.warmer(model)
        except Exception as exc:  # noqa: BLE001 - not swapped in; the old version keeps serving
            attempts = self.failed.attempts + 1 if self.failed and self.failed.version == version else 1
            wait = min(max(self.poll_s, 1.0) * 2 ** (attempts - 1), MAX_RETRY_S)
            self.failed = FailedLoad(version, mask_secrets(f"{type(exc).__name__}: {exc}")[:500], attempts,
                                     self.clock() + wait)
            self.failures += 1
            log.error("%s: version %s of %s failed to load or warm (attempt %d, retry in %.0fs): %s; version %s "
                      "keeps serving", self.role, version, self.uri, attempts, wait, self.failed.error, self.version)
            return
        finally:
            self.loading = None
        self.swap_poll = poll
        self._swap(Loaded(version, model))
        log.info("%s: %s now serves version %s (loaded and warmed in %.1fs)", self.role, self.uri, version,
                 time.perf_counter() - started)

    def _swap(self, new: Loaded) -> None:
        with self._lock:
            old, self.current = self.current, new
            if self.failed and self.failed.version == new.version:
                self.failed = None
            if old is not None:
                self.swaps += 1
                old.retired = True
                done = old.in_flight == 0
        if old is not None and done:
            self._release(old)

    def _retire_current(self) -> None:
        with self._lock:
            old, self.current = self.current, None
            if old is not None:
                old.retired = True
                done = old.in_flight == 0
        if old is not None and done:
            self._release(old)

    def _release(self, loaded: Loaded) -> None:
        """Release off the request thread: gc.collect() must not delay the request that ended last."""
        model, loaded.model = loaded.model, None
        self.released += 1
        log.info("%s: releasing version %s", self.role, loaded.version)
        threading.Thread(target=release, args=(model,), name=f"release-{self.role}", daemon=True).start()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the loading thread, if any (tests and benchmarks)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # ---------------------------------------------------------------- reporting
    def status(self) -> dict:
        """What /health shows for this alias."""
        failed = self.failed
        return {
            "model_uri": self.uri, "serving": self.version, "alias_target": self.target, "loading": self.loading,
            "poll_s": self.poll_s, "last_poll_ago_s": None if self.last_poll_at is None
            else round(max(0.0, self.clock() - self.last_poll_at), 1),
            "poll_error": self.poll_error, "polls": self.polls, "swapped_at_poll": self.swap_poll,
            "swaps": self.swaps, "failed_loads": self.failures,
            "failed": None if failed is None else {"version": failed.version, "error": failed.error,
                                                   "attempts": failed.attempts,
                                                   "retry_in_s": round(max(0.0, failed.retry_at - self.clock()), 1)},
        }

    @property
    def rollout_failed(self) -> bool:
        """The URI points at a version that failed, and another one serves."""
        failed = self.failed
        return bool(failed and failed.version == self.target and self.version != self.target)


class RolloutCollector:
    """Prometheus: `chatbot_model_swaps_total{role,outcome}` (swapped | failed),
    `chatbot_model_rollout_failed{role}` (1 while the alias's target failed and an older version serves) and
    `chatbot_model_serving{role,version}` (1 for the version each role serves), read at scrape time."""

    def __init__(self, backend: Callable[[], Any]):
        self.backend = backend

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        swaps = CounterMetricFamily("chatbot_model_swaps", "alias moves handled, by role and outcome",
                                    labels=["role", "outcome"])
        failed = GaugeMetricFamily("chatbot_model_rollout_failed", "1 while the alias target failed to load or "
                                   "warm and an older version serves", labels=["role"])
        serving = GaugeMetricFamily("chatbot_model_serving", "the version each role serves", labels=["role", "version"])
        for follower in getattr(self.backend(), "followers", lambda: [])():
            swaps.add_metric([follower.role, "swapped"], follower.swaps)
            swaps.add_metric([follower.role, "failed"], follower.failures)
            failed.add_metric([follower.role], 1 if follower.rollout_failed else 0)
            if follower.version is not None:
                serving.add_metric([follower.role, follower.version], 1)
        yield swaps
        yield failed
        yield serving
