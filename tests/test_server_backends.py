"""Backends over real transports: the remote backend against a scoring server on loopback, concurrency of
/chat under uvicorn with a slow provider, and the same response shape from every backend."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from chatbot_model.server import create_app
from chatbot_model.server.backends import RemoteBackend
from tests.server_helpers import (FakeScoringServer, LiveServer, contract_row, make_service, make_settings,
                                       service_app, sibling_service)

Q = "How do I promote a registered MLflow model version to Production?"
FIELDS = {"answer", "question", "sources", "route", "provider", "model", "blocked", "abstained", "fallback",
          "trace_id", "latency_ms", "error"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('backends-store') / 'mlflow.db'}"


@pytest.fixture
def settings(shipped_index, store, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    return make_settings(shipped_index, store, tmp_path)


@pytest.fixture
def scoring():
    server = FakeScoringServer()
    yield server
    server.close()


def remote_client(settings, url, **update):
    s = settings.model_copy(update={"serving_backend": "remote", "scoring_url": url, **update})
    client = TestClient(create_app(s))
    client.__enter__()
    assert client.app.state.backend.loaded.wait(30)
    return client


def test_remote_backend_forwards_dataframe_records_and_answers_like_in_process(settings, scoring):
    client = remote_client(settings, scoring.url)
    try:
        assert client.get("/ready").status_code == 200
        health = client.get("/health").json()
        assert health["backend"] == "remote" and health["scoring_url"] == scoring.url and health["ready"]
        r = client.post("/chat", json={"question": Q, "session_id": "s"})
        assert r.status_code == 200, r.text
        assert scoring.requests[-1] == {"dataframe_records": [{"question": Q}]}
        body = r.json()
        assert set(body) == FIELDS
        assert body == {k: v for k, v in contract_row(Q).items() if k in FIELDS}
        fb = client.post("/feedback", json={"trace_id": body["trace_id"], "rating": "down"})
        assert fb.status_code == 200, fb.text  # known from this process's memory
    finally:
        client.__exit__(None, None, None)


def test_remote_backend_errors_map_to_stable_codes(settings, scoring):
    client = remote_client(settings, scoring.url, backend_timeout_s=0.5)
    try:
        scoring.replies.append((400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "column 'question' bad"}))
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 422 and r.json()["error"] == "invalid_input" and "question" in r.json()["message"]
        scoring.replies.append((500, b"<html>boom</html>"))
        assert client.post("/chat", json={"question": Q}).json()["error"] == "backend_error"
        scoring.replies.append((200, {"no": "predictions"}))
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 502 and "predictions" in r.json()["message"]
        scoring.replies.append((200, {"predictions": [contract_row(Q, error="every provider failed")]}))
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 502 and "every provider failed" in r.json()["message"]
        scoring.delay = 2.0
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 504 and r.json()["error"] == "backend_timeout"
    finally:
        client.__exit__(None, None, None)


def test_remote_backend_unreachable_is_not_ready_and_503(settings):
    from tests.server_helpers import free_port

    client = remote_client(settings, f"http://127.0.0.1:{free_port()}")
    try:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").json()["error"] == "model_not_loaded"
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 503 and r.json()["error"] == "backend_unavailable"
    finally:
        client.__exit__(None, None, None)


def test_remote_backend_without_url_is_a_config_error(settings):
    from chatbot_model.errors import ConfigError

    with pytest.raises(ConfigError, match="CHATBOT_SCORING_URL"):
        RemoteBackend(settings)


async def _post_many(url: str, n: int) -> tuple[float, list[int]]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(*[client.post(f"{url}/chat", json={"question": f"{Q} ({i})"})
                                           for i in range(n)])
        return time.perf_counter() - started, [r.status_code for r in responses]


def test_concurrent_chats_are_not_serialised(settings, fake_llm, shipped_index, tmp_path):
    """32 concurrent /chat requests with a slow provider take about as long as a few, not 32."""
    keyed = settings.model_copy(update={"openai_api_key": SecretStr("sk-test"),
                                        "openai_base_url": fake_llm.openai_base_url,
                                        "anthropic_api_key": SecretStr("sk-ant-test"),
                                        "anthropic_base_url": fake_llm.anthropic_base_url,
                                        # synchronous trace export to sqlite (conftest) is not what is measured
                                        "tracing": False})
    service = make_service(make_settings(shipped_index, settings.tracking_uri, tmp_path))
    slow = sibling_service(service, keyed)
    fake_llm.delay = 0.5
    live = LiveServer(service_app(keyed, slow))
    try:
        live.wait_ready()
        one, codes = asyncio.run(_post_many(live.url, 1))
        assert codes == [200] and one >= 0.5
        many, codes = asyncio.run(_post_many(live.url, 32))
        assert codes == [200] * 32
        assert many < 8 * one, f"32 concurrent requests took {many:.2f}s, one took {one:.2f}s"
        assert {r.path for r in fake_llm.requests} <= {"/v1/chat/completions", "/v1/messages"}
        assert len(fake_llm.requests) == 33
    finally:
        live.close()
