"""The real deployable unit behind the wrapper: a registered + promoted pyfunc model loaded in-process, and the
same model behind `mlflow models serve` through the remote backend. Same response fields either way."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from chatbot_model.server import create_app
from tests.helpers import make_settings, mlflow_models_serve, tracking_store

pytestmark = pytest.mark.slow
Q = "How do I promote a registered MLflow model version to Production?"
FIELDS = {"answer", "question", "standalone_question", "sources", "route", "provider", "model", "blocked",
          "abstained", "fallback", "trace_id", "model_version", "latency_ms", "error", "session_id"}


@pytest.fixture(scope="module")
def registered(shipped_index, tmp_path_factory):
    """A store with llmops-chatbot version 1 in Production (the registry's own log/register/promote)."""
    from chatbot_model.lifecycle.registry import log_and_register, promote

    tmp = tmp_path_factory.mktemp("server-registry")
    store = tracking_store(tmp)
    with pytest.MonkeyPatch.context() as env:  # the store of this module's fixture only, restored after
        env.setenv("MLFLOW_TRACKING_URI", store)
        settings = make_settings(shipped_index, store, tmp)
        version = log_and_register(settings)
        promote(version.name, "Production", version.version, settings=settings, force=True,
                reason="test fixture: a served model, not a candidate")
    return store, version


@pytest.fixture
def settings(registered, shipped_index, tmp_path, monkeypatch):
    import mlflow

    store, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    return make_settings(shipped_index, store, tmp_path)


def test_in_process_backend_serves_the_production_model(settings, registered):
    _, version = registered
    with TestClient(create_app(settings)) as client:
        backend = client.app.state.backend
        assert backend.name == "in-process" and backend.loaded.wait(180), backend.load_error
        assert backend.load_error is None
        health = client.get("/health").json()
        assert health["ready"] and health["model_uri"] == "models:/llmops-chatbot@production"
        assert health["model_version"] == version.version and health["guardrail"] == "embedded"
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == FIELDS and body["sources"] and body["provider"] == "local"
        assert body["trace_id"].startswith("tr-")
        fb = client.post("/feedback", json={"trace_id": body["trace_id"], "rating": "up"})
        assert fb.status_code == 200, fb.text
        from chatbot_model.store.feedback import FeedbackStore

        row = FeedbackStore(settings.feedback_db_url).ratings()[0]
        assert row.model_version == version.version and row.session_id == r.json()["session_id"]


def test_remote_backend_against_mlflow_models_serve(settings, registered, tmp_path):
    store, _ = registered
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "CHATBOT_GUARDRAIL_BACKEND": "embedded"}
    with mlflow_models_serve("models:/llmops-chatbot@production", env, tmp_path) as url:
        s = settings.model_copy(update={"serving_backend": "remote", "scoring_url": url})
        with TestClient(create_app(s)) as client:
            assert client.app.state.backend.loaded.wait(30)
            assert client.get("/ready").status_code == 200
            r = client.post("/chat", json={"question": Q})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == FIELDS and body["sources"] and body["provider"] == "local"
            assert body["trace_id"].startswith("tr-")
            fb = client.post("/feedback", json={"trace_id": body["trace_id"], "rating": "down"})
            assert fb.status_code == 200, fb.text
