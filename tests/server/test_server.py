"""The FastAPI wrapper with the service backend (an `LLMService` without MLflow packaging, fast to build): errors,
auth, limits, metrics, readiness. The happy paths on the default in-process backend are in test_served_app.py."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from chatbot_model.server import create_app
from chatbot_model.server.backends import BACKENDS, Backend, InProcessBackend, build_backend
from chatbot_model.errors import ConfigError
from chatbot_model.providers import PROVIDERS
from tests.fake_providers import gated
from tests.helpers import make_service, make_settings, service_app, sibling_service, tracking_store

Q = "How do I promote a registered MLflow model version to Production?"
TOXIC = "Fuck you, you worthless piece of shit."


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return tracking_store(tmp_path_factory.mktemp("server-store"))


@pytest.fixture(scope="module")
def service(shipped_index, store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server-service")
    return make_service(make_settings(shipped_index, store, tmp))


@pytest.fixture
def settings(shipped_index, store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    import mlflow

    mlflow.set_tracking_uri(store)
    return make_settings(shipped_index, store, tmp_path)


def client_for(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    assert app.state.backend.loaded.wait(120)
    return client


@pytest.fixture
def make_client(settings, service):
    clients = []

    def make(settings_=None, service_=None, **kw) -> TestClient:
        s = settings_ or settings
        client = client_for(service_app(s, service_ or service, **kw))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    for word in words:
        assert word in body["message"], body
    return body


# ---------------------------------------------------------------- /chat
@pytest.mark.parametrize("payload, field", [
    ({"question": ""}, "question"),
    ({"question": "   \n\t "}, "question"),
    ({}, "question"),
    ({"question": 42}, "question"),
    ({"question": ["a"]}, "question"),
    ({"question": "ok", "session_id": 5}, "session_id"),
    ({"question": "\u200b\x00 \ufeff"}, "question"),  # only invisible and control characters
])
def test_bad_questions_are_422_naming_the_field(client, payload, field):
    body = assert_error(client.post("/chat", json=payload), 422, "invalid_input", field)
    assert field in body["fields"]


def test_lone_surrogate_is_422_and_malformed_json_400(client):  # tests/test_input_errors.py: the JSON messages
    assert_error(client.post("/chat", content=b'{"question": "\\ud800"}',
                             headers={"content-type": "application/json"}), 422, "invalid_input", "question")
    assert_error(client.post("/chat", content=b'{"question": ', headers={"content-type": "application/json"}),
                 400, "invalid_json", "JSON")
    assert_error(client.post("/chat", content=b'[1, 2]', headers={"content-type": "application/json"}),
                 422, "invalid_input")


def test_question_over_the_character_limit_is_422(make_client, settings):
    client = make_client(settings.model_copy(update={"max_question_chars": 50}))
    assert_error(client.post("/chat", json={"question": "x" * 51}), 422, "invalid_input", "question", "50")


def test_body_over_the_limit_is_413_by_length_and_when_chunked(client, settings):
    big = b'{"question": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
    assert_error(client.post("/chat", content=big, headers={"content-type": "application/json"}),
                 413, "body_too_large", str(settings.max_body_bytes))

    def chunks():  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"question": "'
        for _ in range(settings.max_body_bytes // 1000 + 2):
            yield b"a" * 1000
        yield b'"}'

    r = client.post("/chat", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error(r, 413, "body_too_large")


def test_unknown_path_and_wrong_method_have_error_codes(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/chat"), 405, "method_not_allowed")


# ---------------------------------------------------------------- health and readiness
def test_health_reports_what_is_loaded(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["ready"] is True and body["loading"] is False
    assert body["backend"] == "service" and body["guardrail"] == "embedded"
    assert body["providers"]["local"] == "ready" and "OPENAI_API_KEY" in body["providers"]["openai"]
    assert body["api_key_required"] is False and body["load_error"] is None
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/health", params={"ready": 1}).status_code == 200


def test_missing_model_keeps_liveness_and_fails_readiness_and_chat(settings):
    s = settings.model_copy(update={"model_uri": "models:/no-such-model@production"})
    with TestClient(create_app(s)) as client:
        backend = client.app.state.backend
        assert isinstance(backend, InProcessBackend) and backend.loaded.wait(60)
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["ready"] is False and "no-such-model" in health.json()["load_error"]
        assert health.json()["model_uri"] == "models:/no-such-model@production"
        assert_error(client.get("/ready"), 503, "model_not_loaded")
        assert_error(client.get("/health?ready=1"), 503, "model_not_loaded")
        assert_error(client.post("/chat", json={"question": Q}), 503, "model_not_loaded", "CHATBOT_MODEL_URI")


class GatedBackend(Backend):
    """A backend whose load waits for the test (a real Backend: registered the usual way below)."""

    name = "gated"

    def __init__(self, settings, gate: threading.Event):
        super().__init__(settings)
        self.gate = gate

    def _load(self):
        assert self.gate.wait(30)

    def _predict(self, questions):
        return [{"answer": "ok", "route": "gpt", "provider": "local", "model": "m", "trace_id": "tr-gated"}
                for _ in questions]


def test_loading_does_not_block_requests(settings):
    gate = threading.Event()
    app = create_app(settings, backend=GatedBackend(settings, gate))
    with TestClient(app) as client:  # startup returned while the model is still loading
        body = client.get("/health").json()
        assert body["loading"] is True and body["ready"] is False
        assert_error(client.get("/ready"), 503, "model_not_loaded", "loading")
        assert_error(client.post("/chat", json={"question": Q}), 503, "model_not_loaded", "loading")
        assert not app.state.backend.loaded.is_set()  # all three answered while the load was still held
        gate.set()
        assert app.state.backend.loaded.wait(10)
        assert client.get("/ready").status_code == 200
        body = client.post("/chat", json={"question": Q}).json()
        assert body["answer"] == "ok" and body["fallback"] == "" and body["sources"] == []


def test_backend_registry_names_the_choices(settings):
    assert set(BACKENDS) == {"in-process", "remote", "service"}
    with pytest.raises(ConfigError, match=r"unknown serving backend 'x'; choose one of \['in-process'"):
        build_backend("x", settings)


# ---------------------------------------------------------------- timeouts
def test_slow_backend_is_504_without_waiting_for_the_provider(make_client, settings, service, monkeypatch):
    provider = gated()
    for name in ("openai", "anthropic"):  # both routes' providers hold every call until released
        monkeypatch.setitem(PROVIDERS, name, provider)
    s = settings.model_copy(update={"backend_timeout_s": 0.5})
    client = make_client(s, sibling_service(service, s))
    try:
        assert_error(client.post("/chat", json={"question": Q}), 504, "backend_timeout", "CHATBOT_BACKEND_TIMEOUT_S")
        assert not provider.finished.is_set()  # answered while any provider call was still held
    finally:
        provider.release.set()


def _secret(value):
    from pydantic import SecretStr

    return SecretStr(value)


# ---------------------------------------------------------------- API key
def test_api_key_guards_chat_and_feedback_only(make_client, settings):
    client = make_client(settings.model_copy(update={"api_key": _secret("s3cret")}))
    assert_error(client.post("/chat", json={"question": Q}), 401, "unauthorized", "CHATBOT_API_KEY")
    r = client.post("/chat", json={"question": Q}, headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/feedback", json={"trace_id": "tr-x", "rating": "up"}), 401, "unauthorized")
    ok = client.post("/chat", json={"question": Q}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    fb = client.post("/feedback", json={"trace_id": ok.json()["trace_id"], "rating": "up"},
                     headers={"Authorization": "Bearer s3cret"})
    assert fb.status_code == 200
    assert client.get("/health").json() == {"status": "ok", "version": client.app.version}  # no details without it
    assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).json()["api_key_required"] is True
    assert client.get("/metrics").status_code == 401 and client.get("/").status_code == 200


# ---------------------------------------------------------------- /feedback
def test_feedback_for_a_trace_served_by_another_process_is_found_in_mlflow(make_client):
    answer = make_client().post("/chat", json={"question": Q}).json()
    other = make_client()  # a fresh app: nothing in its memory
    r = other.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "up"})
    assert r.status_code == 200, r.text


def test_unknown_trace_is_404_and_bad_rating_422(client):
    assert_error(client.post("/feedback", json={"trace_id": "tr-00000000000000000000000000000000", "rating": "up"}),
                 404, "trace_not_found")
    assert_error(client.post("/feedback", json={"trace_id": "not a trace", "rating": "up"}), 422, "invalid_input",
                 "not an MLflow trace id")
    assert_error(client.post("/feedback", json={"trace_id": "tr-1", "rating": "meh"}), 422, "invalid_input", "rating")
    assert_error(client.post("/feedback", json={"rating": "up"}), 422, "invalid_input", "trace_id")
    assert_error(client.post("/feedback", json={"trace_id": "tr-1", "rating": "up", "comment": "x" * 5000}),
                 422, "invalid_input", "comment")


def test_feedback_store_failure_is_503_not_500(make_client, settings):
    class BrokenStore:
        def record(self, **kw):
            raise OSError("disk full")

    client = make_client(feedback_store=BrokenStore())
    answer = client.post("/chat", json={"question": Q}).json()
    assert_error(client.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "up"}),
                 503, "feedback_unavailable")


# ---------------------------------------------------------------- /metrics
def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_routes_providers_blocked_and_fallbacks(client):
    answer = client.post("/chat", json={"question": Q}).json()
    client.post("/chat", json={"question": TOXIC})
    client.post("/chat", json={"question": ""})
    client.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "up"})
    text = client.get("/metrics").text
    assert metric(text, "chatbot_http_requests_total", endpoint="/chat", status="200") == 2
    assert metric(text, "chatbot_http_requests_total", endpoint="/chat", status="422") == 1
    assert metric(text, "chatbot_http_request_duration_seconds_count", endpoint="/chat", status="200") == 2
    assert metric(text, "chatbot_chat_route_total", route=answer["route"]) == 1
    assert metric(text, "chatbot_chat_route_total", route="blocked") == 1
    assert metric(text, "chatbot_chat_provider_total", provider="local") == 1
    assert metric(text, "chatbot_chat_blocked_total") == 1
    assert metric(text, "chatbot_chat_fallback_total") == 1
    assert metric(text, "chatbot_feedback_total", rating="up") == 1
    assert metric(text, "chatbot_model_ready") == 1


def test_each_app_has_its_own_metrics(make_client):
    a, b = make_client(), make_client()
    a.post("/chat", json={"question": Q})
    assert metric(b.get("/metrics").text, "chatbot_http_requests_total", endpoint="/chat") == 0


# ---------------------------------------------------------------- page and schema
def test_chat_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/app.js"' in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


def test_openapi_documents_the_endpoints_and_error_bodies(client):
    spec = client.get("/openapi.json").json()
    assert {"/chat", "/feedback", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    chat = spec["paths"]["/chat"]["post"]["responses"]
    assert {"200", "413", "422", "503", "504"} <= set(chat)
    assert spec["components"]["schemas"]["ErrorResponse"]["required"] == ["error", "message"]
