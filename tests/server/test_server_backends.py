"""Backends over real transports: the remote backend against a scoring server on loopback (and its call
cancelled when the client hangs up), concurrency of /chat under uvicorn with a slow provider, and the same
response shape from every backend."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from chatbot_model.server import create_app
from chatbot_model.providers import PROVIDERS
from chatbot_model.server.backends import RemoteBackend
from tests.fake_providers import rendezvous
from tests.helpers import (FakeScoringServer, LiveServer, contract_row, make_service, make_settings,
                                       service_app, sibling_service, tracking_store, wait_until)

Q = "How do I promote a registered MLflow model version to Production?"
FIELDS = {"answer", "question", "standalone_question", "sources", "route", "provider", "model", "blocked",
          "abstained", "fallback", "trace_id", "model_version", "latency_ms", "error", "session_id"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return tracking_store(tmp_path_factory.mktemp("backends-store"))


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
        r = client.post("/chat", json={"question": Q})
        assert r.status_code == 200, r.text
        assert scoring.requests[-1] == {"dataframe_records": [{"question": Q}]}
        body = r.json()
        assert set(body) == FIELDS
        assert body == {**{k: v for k, v in contract_row(Q).items() if k in FIELDS}, "session_id": body["session_id"]}
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
    from tests.helpers import free_port

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


def chat_then_hang_up(url: str, body: dict, arrived: threading.Event) -> None:
    """POST /chat on a raw connection, close it once the scoring server holds the request."""
    data = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /chat HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(data), data))
        assert arrived.wait(60), "the request never reached the scoring server"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_hanging_up_cancels_the_call_to_the_scoring_server(settings, stream):
    """The scoring server holds the request until released; the client hangs up meanwhile. The wrapper must close
    its connection to the scoring server before the release (which comes only at the end), and count the
    request as 499 `client_closed_request`."""
    held = FakeScoringServer(hold=True)
    remote = settings.model_copy(update={"serving_backend": "remote", "scoring_url": held.url,
                                         "backend_timeout_s": 300, "tracing": False})
    live = LiveServer(create_app(remote))
    try:
        live.wait_ready()
        chat_then_hang_up(live.url, {"question": Q, "stream": stream}, held.arrived)
        assert held.hung_up.wait(60), "the call to the scoring server kept running after the client hung up"
        assert not held.release.is_set()
        counted = 'chatbot_http_requests_total{endpoint="/chat",method="POST",status="499"} 1.0'
        wait_until(lambda: counted in httpx.get(f"{live.url}/metrics").text, "the hang-up counted as 499")
    finally:
        held.close()
        live.close()


async def _post_many(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*[client.post(f"{url}/chat", json={"question": f"{Q} ({i})"})
                                      for i in range(n)])


def test_concurrent_chats_are_not_serialised(settings, shipped_index, tmp_path, monkeypatch):
    """32 concurrent /chat requests under uvicorn are inside the provider at the same time: each call waits on
    one Barrier(32), so serialised requests would break it and fall back to the local answerer."""
    provider = rendezvous(32)
    for name in ("openai", "anthropic"):
        monkeypatch.setitem(PROVIDERS, name, provider)
    quiet = settings.model_copy(update={"tracing": False})  # trace export is not what this test is about
    service = make_service(make_settings(shipped_index, settings.tracking_uri, tmp_path))
    live = LiveServer(service_app(quiet, sibling_service(service, quiet)))
    try:
        live.wait_ready()
        responses = asyncio.run(_post_many(live.url, 32))
        assert [r.status_code for r in responses] == [200] * 32
        bodies = [r.json() for r in responses]
        assert {(b["provider"], b["fallback"]) for b in bodies} == {("rendezvous", "")}, bodies[0]
        assert sorted(b["answer"] for b in bodies) == sorted(f"rendezvous answer to: {Q} ({i})" for i in range(32))
        assert not provider.barrier.broken
    finally:
        live.close()
