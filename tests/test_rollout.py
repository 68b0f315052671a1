"""Following the alias without a restart (server/rollout.py): the swap, failed versions, champion/challenger.

The registry is injected (a resolver reading a dict, a loader building versioned models) and polls are triggered
by hand; barriers and events prove that requests keep being answered while a version loads, that an in-flight
request finishes on the old version and that nothing fails. The real registry is in test_rollout_registry.py."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from chatbot_model.config import load_settings
from chatbot_model.contract import OUTPUT_COLUMNS, AnswerRow
from chatbot_model.server import create_app
from chatbot_model.server.backends import InProcessBackend
from chatbot_model.server.rollout import WARMUP_QUESTION, assign

HOLD = "hold this question until released"


class VersionedModel:
    """A loaded model version: answers in the contract, says which version it is, and can hold a question
    (`hold`) until `release_held` is set. `closed` tells whether the server released it."""

    def __init__(self, version: str, *, warm_error: str = ""):
        self.version, self.warm_error = version, warm_error
        self.held, self.release_held = threading.Event(), threading.Event()
        self.questions: list[str] = []
        self.closed = False

    def unwrap_python_model(self):
        return self

    def close(self):
        self.closed = True

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for q in frame["question"]:
            self.questions.append(q)
            if q == HOLD:
                self.held.set()
                assert self.release_held.wait(30)
            error = self.warm_error if q == WARMUP_QUESTION else ""
            rows.append(AnswerRow(answer="" if error else f"answer of version {self.version}", question=q,
                                  error=error, model_version=self.version).to_record())
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


class Registry:
    """Where each alias points, and a loader that can be held at the start of a load (`gate`) or fail."""

    def __init__(self, **aliases):
        self.aliases = dict(aliases)
        self.models: dict[str, VersionedModel] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.loading = threading.Event()
        self.broken: dict[str, str] = {}  # version -> load error
        self.bad_warmup: dict[str, str] = {}  # version -> error of the warm-up answer
        self.loads: list[str] = []

    def resolver(self, uri: str):
        alias = uri.rsplit("@", 1)[1]
        return lambda: self.aliases.get(alias)

    def loader(self, version: str):
        self.loads.append(version)
        self.loading.set()
        assert self.gate.wait(30)
        if version in self.broken:
            raise RuntimeError(self.broken[version])
        model = self.models[version] = VersionedModel(version, warm_error=self.bad_warmup.get(version, ""))
        return model


def make_backend(registry: Registry, **overrides) -> InProcessBackend:
    settings = load_settings(model_uri="models:/llmops-chatbot@production", alias_poll_s=0, **overrides)
    backend = InProcessBackend(settings, loader=registry.loader, resolver=registry.resolver)
    backend.load()
    assert backend.ready(), backend.load_error
    return backend


class Client(threading.Thread):
    """Sends questions one after another until stopped; records every status and answering version."""

    def __init__(self, http: TestClient, session_id: str | None = None):
        super().__init__(daemon=True)
        self.http, self.session_id = http, session_id
        self.statuses: list[int] = []
        self.versions: list[str] = []
        self.stop = threading.Event()
        self.answered = threading.Condition()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            r = self.http.post("/chat", json={"question": f"question {n}",
                                              **({"session_id": self.session_id} if self.session_id else {})})
            with self.answered:
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.versions.append(r.json()["model_version"])
                self.answered.notify_all()

    def wait_for(self, predicate, timeout: float = 60) -> None:
        with self.answered:
            assert self.answered.wait_for(lambda: predicate(self), timeout), self.statuses[-5:]


def test_alias_move_swaps_without_a_failed_or_waiting_request():
    registry = Registry(production="1")
    backend = make_backend(registry)
    assert registry.models["1"].questions == [WARMUP_QUESTION]  # warmed before serving
    app = create_app(load_settings(alias_poll_s=0), backend=backend)
    with TestClient(app) as http:
        held = {}
        holder = threading.Thread(target=lambda: held.update(r=http.post("/chat", json={"question": HOLD})))
        holder.start()
        assert registry.models["1"].held.wait(30)  # a request in flight on version 1

        client = Client(http)
        client.start()
        client.wait_for(lambda c: len(c.versions) >= 3)
        registry.gate.clear()
        registry.aliases["production"] = "2"  # the alias moves
        (loader,) = backend.poll()
        assert registry.loading.wait(30)
        seen = len(client.versions)
        client.wait_for(lambda c: len(c.versions) >= seen + 3)  # answered while version 2 loads
        assert set(client.versions) == {"1"}
        assert http.get("/health").json()["rollout"]["loading"] == "2"

        registry.gate.set()
        loader.join(30)
        assert backend.version == "2" and registry.models["2"].questions[0] == WARMUP_QUESTION
        seen = len(client.versions)
        client.wait_for(lambda c: len(c.versions) >= seen + 3)
        client.stop.set()
        client.join(30)

        assert not registry.models["1"].closed  # still answering the held request
        registry.models["1"].release_held.set()
        holder.join(30)
        assert held["r"].status_code == 200 and held["r"].json()["model_version"] == "1"
        backend.champion.wait_idle()
        _wait_released(backend, 1)
        assert registry.models["1"].closed

        assert set(client.statuses) == {200}, "a request failed during the swap"
        first_v2 = client.versions.index("2")
        assert set(client.versions[:first_v2]) == {"1"} and set(client.versions[first_v2:]) == {"2"}
        health = http.get("/health").json()
        assert health["model_version"] == "2" and health["alias_target"] == "2"
        assert health["rollout"]["swaps"] == 1 and health["rollout"]["failed"] is None


def _wait_released(backend, n: int) -> None:
    import time

    for _ in range(600):  # the release runs in its own thread; bounded wait for it, no timing asserted
        if backend.champion.released >= n and not any(t.name.startswith("release-") for t in threading.enumerate()):
            return
        time.sleep(0.05)
    raise AssertionError("the old version was not released")


@pytest.mark.parametrize("failure", ["load", "warmup"])
def test_a_version_that_fails_is_not_swapped_in_and_is_reported(failure):
    registry = Registry(production="1")
    backend = make_backend(registry)
    clock = [100.0]
    backend.champion.clock = lambda: clock[0]
    if failure == "load":
        registry.broken["2"] = "artifact download failed"
    else:
        registry.bad_warmup["2"] = "every provider failed"
    registry.aliases["production"] = "2"
    with TestClient(create_app(load_settings(alias_poll_s=0), backend=backend)) as http:
        for thread in backend.poll():
            thread.join(30)
        r = http.post("/chat", json={"question": "still served?"})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == "1" and health["alias_target"] == "2"
        failed = health["rollout"]["failed"]
        assert failed["version"] == "2" and failed["attempts"] == 1
        assert ("artifact download failed" if failure == "load" else "every provider failed") in failed["error"]
        metrics = http.get("/metrics").text
        assert 'chatbot_model_rollout_failed{role="champion"} 1.0' in metrics
        assert 'chatbot_model_swaps_total{outcome="failed",role="champion"} 1.0' in metrics
        assert 'chatbot_model_serving{role="champion",version="1"} 1.0' in metrics

        assert backend.poll() == []  # within the backoff: not retried
        clock[0] += 1.0
        registry.broken.pop("2", None)
        registry.bad_warmup.pop("2", None)
        for thread in backend.poll():  # the backoff has passed: retried, and now it loads
            thread.join(30)
        assert http.post("/chat", json={"question": "now?"}).json()["model_version"] == "2"
        assert http.get("/health").json()["rollout"]["failed"] is None
        assert 'chatbot_model_rollout_failed{role="champion"} 0.0' in http.get("/metrics").text


def test_registry_down_during_a_poll_keeps_serving():
    registry = Registry(production="1")
    backend = make_backend(registry)

    def down():
        raise ConnectionError("tracking server unreachable")

    backend.champion.resolver = down
    assert backend.poll() == []
    assert backend.predict(["q"])[0]["model_version"] == "1"
    assert "unreachable" in backend.info()["rollout"]["poll_error"]


def test_assignment_is_sticky_and_takes_its_share():
    sessions = [f"session-{i}" for i in range(4000)]
    chosen = [s for s in sessions if assign(s, 0.25)]
    assert 0.22 < len(chosen) / len(sessions) < 0.28
    assert chosen == [s for s in sessions if assign(s, 0.25)]  # same answer every time
    assert set(chosen) <= {s for s in sessions if assign(s, 0.5)}  # a larger share keeps its sessions
    assert not assign(None, 0.9) and not assign("x", 0.0)


def test_challenger_serves_its_sticky_share_and_both_aliases_are_followed():
    registry = Registry(production="1", staging="2")
    backend = make_backend(registry, challenger_alias="staging", challenger_share=0.3)
    backend.challenger.wait_idle(30)
    sessions = [f"user-{i}" for i in range(200)]
    served = {s: backend.predict(["q"], session_id=s)[0]["model_version"] for s in sessions}
    assert {s for s, v in served.items() if v == "2"} == {s for s in sessions if assign(s, 0.3)}
    assert 0.2 < sum(v == "2" for v in served.values()) / len(sessions) < 0.4
    assert all(backend.predict(["again"], session_id=s)[0]["model_version"] == v for s, v in served.items())
    assert backend.predict(["no session"])[0]["model_version"] == "1"
    assert backend.info()["challenger"]["serving"] == "2" and backend.info()["challenger"]["share"] == 0.3

    registry.aliases["staging"] = "3"  # a new challenger
    for thread in backend.poll():
        thread.join(30)
    assert {backend.predict(["q"], session_id=s)[0]["model_version"] for s in sessions} == {"1", "3"}

    registry.aliases["production"] = "3"  # the challenger promoted: one version, the challenger holds nothing
    for thread in backend.poll():
        thread.join(30)
    backend.poll()
    assert backend.challenger.version is None
    assert {backend.predict(["q"], session_id=s)[0]["model_version"] for s in sessions} == {"3"}


def test_challenger_needs_a_registry_uri():
    from chatbot_model.errors import ConfigError

    settings = load_settings(model_uri="runs:/abc/model", challenger_alias="staging")
    with pytest.raises(ConfigError, match="CHATBOT_CHALLENGER_ALIAS needs a registry CHATBOT_MODEL_URI"):
        InProcessBackend(settings)


def test_poll_loop_runs_on_its_interval_and_stops_with_the_app():
    """The loop polls once per CHATBOT_ALIAS_POLL_S (an injected wait counts the intervals) and ends on close."""
    registry = Registry(production="1")
    settings = load_settings(model_uri="models:/llmops-chatbot@production", alias_poll_s=30)
    backend = InProcessBackend(settings, loader=registry.loader, resolver=registry.resolver)
    waits, polled = [], threading.Event()

    def wait(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            registry.aliases["production"] = "2"
        if len(waits) == 3:
            polled.set()
            return True  # closing: the loop ends
        return False

    backend.poll_wait = wait
    backend.load()
    assert polled.wait(30)
    backend._poller.join(30)
    backend.champion.wait_idle(30)
    assert waits == [30, 30, 30] and backend.version == "2"


def test_a_session_picked_for_a_challenger_retired_meanwhile_gets_the_champion():
    registry = Registry(production="1", staging="2")
    backend = make_backend(registry, challenger_alias="staging", challenger_share=1.0)
    backend.challenger.wait_idle(30)
    assert backend.predict(["q"], session_id="s")[0]["model_version"] == "2"
    challenger = backend.challenger
    backend.pick = lambda session_id: challenger  # picked just before the next line retires it
    challenger._retire_current()
    assert backend.predict(["q"], session_id="s")[0]["model_version"] == "1"
