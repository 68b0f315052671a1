"""Providers for concurrency tests, registered through the normal registry (`PROVIDERS`) in place of the route
providers. They prove concurrency by a rendezvous, never by the clock:

    monkeypatch.setitem(PROVIDERS, "openai", rendezvous(parties=32))

`rendezvous(n)`: every call waits on one `threading.Barrier(n)`; it answers only once n calls are inside the
provider at the same time. Serialised calls break the barrier (after `timeout`) and the call fails, so the
answer comes from the local fallback instead, which the test sees in `provider` and `fallback`.
`gated()`: every call waits until the test sets `release`; `entered` and `finished` say where it is.
"""

from __future__ import annotations

import threading

from chatbot_model.providers.base import Provider
from chatbot_model.contract import Completion


class _Fake(Provider):
    needs_key = False

    def _answer(self, request) -> Completion:
        return Completion(text=f"{self.name} answer to: {request.question}", provider=self.name, model="fake-1")


def rendezvous(parties: int, timeout: float = 60.0) -> type[Provider]:
    barrier = threading.Barrier(parties, timeout=timeout)

    class Rendezvous(_Fake):
        name = "rendezvous"

        def _complete_once(self, request) -> Completion:
            barrier.wait()  # BrokenBarrierError (-> ProviderError, fallback) unless `parties` calls overlap
            return self._answer(request)

    Rendezvous.barrier = barrier
    return Rendezvous


def gated(timeout: float = 60.0) -> type[Provider]:
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    class Gated(_Fake):
        name = "gated"

        def _complete_once(self, request) -> Completion:
            entered.set()
            release.wait(timeout)
            finished.set()
            return self._answer(request)

    Gated.entered, Gated.release, Gated.finished = entered, release, finished
    return Gated
