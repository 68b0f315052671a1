"""The alias moves in a real MLflow registry: the wrapper serves the new version without a restart and without a
failed request, releases the old one, and every answer, trace and rating carries the version that answered."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
from fastapi.testclient import TestClient

from chatbot_model.server import create_app
from tests.server_helpers import make_settings
from tests.test_rollout import Client, _wait_released

pytestmark = pytest.mark.slow
NAME = "llmops-chatbot"


@pytest.fixture(scope="module")
def two_versions(shipped_index, tmp_path_factory):
    """A store with versions 1 and 2 of llmops-chatbot, `production` on version 1."""
    from mlflow import MlflowClient

    from chatbot_model.registry import log_and_register

    tmp = tmp_path_factory.mktemp("rollout-registry")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    try:
        settings = make_settings(shipped_index, store, tmp)
        v1 = log_and_register(settings)
        v2 = log_and_register(settings, hint="Answer in one short paragraph and cite the sources.")
        MlflowClient(store).set_registered_model_alias(NAME, "production", v1.version)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return store, v1.version, v2.version


def test_moving_the_alias_swaps_the_served_version_without_a_failed_request(two_versions, shipped_index, tmp_path,
                                                                            monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from chatbot_model.feedback import FeedbackStore

    store, v1, v2 = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    settings = make_settings(shipped_index, store, tmp_path, alias_poll_s=0)
    with TestClient(create_app(settings)) as http:
        backend = http.app.state.backend
        assert backend.loaded.wait(300) and backend.ready(), backend.load_error
        assert http.get("/health").json()["model_version"] == v1
        old_model = weakref.ref(backend.champion.current.model.unwrap_python_model())

        client = Client(http)
        client.start()
        client.wait_for(lambda c: len(c.versions) >= 2, timeout=120)
        MlflowClient(store).set_registered_model_alias(NAME, "production", v2)  # the promotion
        (loader,) = backend.poll()
        loader.join(300)
        assert backend.version == v2, backend.info()["rollout"]
        seen = len(client.versions)
        client.wait_for(lambda c: len(c.versions) >= seen + 2, timeout=120)
        client.stop.set()
        client.join(60)

        assert set(client.statuses) == {200}, "a request failed during the swap"
        first = client.versions.index(v2)
        assert set(client.versions[:first]) == {v1} and set(client.versions[first:]) == {v2}
        health = http.get("/health").json()
        assert health["model_version"] == v2 and health["alias_target"] == v2 and health["rollout"]["swaps"] == 1

        _wait_released(backend, 1)
        gc.collect()
        assert old_model() is None, "version 1 is still referenced after the swap"

        body = http.post("/chat", json={"question": "How do I register a model?", "session_id": "s"}).json()
        assert body["model_version"] == v2
        assert http.post("/feedback", json={"trace_id": body["trace_id"], "rating": "up"}).status_code == 200
        assert FeedbackStore(settings.feedback_db_url).ratings()[-1].model_version == v2
        trace = MlflowClient(store).get_trace(body["trace_id"])
        assert trace.info.tags["model_version"] == v2 and trace.info.tags["abstained"] == "false"


def test_a_version_that_cannot_load_keeps_the_old_one_serving(two_versions, shipped_index, tmp_path, monkeypatch):
    """An alias moved to a version whose artifacts are gone: not swapped in, reported; version 1 keeps serving."""
    import mlflow
    from mlflow import MlflowClient

    store, v1, _ = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    client.set_registered_model_alias(NAME, "production", v1)
    broken = client.create_model_version(NAME, source=str(tmp_path / "no-such-model"), run_id=None)
    settings = make_settings(shipped_index, store, tmp_path, alias_poll_s=0)
    try:
        with TestClient(create_app(settings)) as http:
            backend = http.app.state.backend
            assert backend.loaded.wait(300) and backend.ready(), backend.load_error
            client.set_registered_model_alias(NAME, "production", broken.version)
            for thread in backend.poll():
                thread.join(300)
            r = http.post("/chat", json={"question": "How do I register a model?"})
            assert r.status_code == 200 and r.json()["model_version"] == v1
            health = http.get("/health").json()
            assert health["model_version"] == v1 and health["alias_target"] == str(broken.version)
            assert health["rollout"]["failed"]["version"] == str(broken.version)
            assert 'chatbot_model_rollout_failed{role="champion"} 1.0' in http.get("/metrics").text
    finally:
        client.set_registered_model_alias(NAME, "production", v1)  # the broken version stays registered, unused
