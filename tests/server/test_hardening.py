"""Hardening of the server and the CLI: model load retried with backoff (injected clock and sleeper), /health
unhealthy without a model, bounded metrics labels, optional key on /metrics and the docs, no password printed or
logged, security headers, id lengths equal to the columns, non-UTF-8 bodies."""

from __future__ import annotations

import io
import logging
import random
import re
import string
import threading

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError
from chatbot_model.server import create_app
from chatbot_model.server.backends import Backend
from tests.helpers import CANARY, FlakyBackend, tracking_store

Q = "How do I promote a registered MLflow model version to Production?"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings_for(**overrides):
    return load_settings(**{"model_load_retry_initial_s": 1.0, "model_load_retry_max_s": 8.0, **overrides})


def recording_sleeper(backend: Backend, clock: FakeClock) -> list[float]:
    """Replace the backend's sleep: record each wait and advance the fake clock by it (no real waiting)."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    backend.clock, backend.sleep = clock, sleep
    return waits


# ---------------------------------------------------------------- model load retried with backoff
def test_failed_load_is_retried_with_capped_exponential_backoff():
    backend = FlakyBackend(settings_for(), failures=6)
    waits = recording_sleeper(backend, FakeClock())
    backend.load()
    assert waits == [1, 2, 4, 8, 8, 8]
    assert backend.load_attempts == backend.calls == 7
    assert backend.ready() and backend.load_error is None and backend.settled.is_set()
    assert backend.next_attempt_in() is None and backend.without_model_for() == 0


def test_load_gives_up_after_the_configured_attempts_and_masks_the_password():
    backend = FlakyBackend(settings_for(model_load_max_attempts=3), failures=100)
    waits = recording_sleeper(backend, FakeClock())
    backend.load()
    assert waits == [1, 2] and backend.calls == 3 and not backend.ready()
    assert "is down" in backend.load_error and CANARY not in backend.load_error
    assert "gave up after 3 attempts" in backend.not_ready_reason()


def test_close_stops_the_retries():
    backend = FlakyBackend(settings_for(model_load_retry_initial_s=3600, model_load_retry_max_s=3600),
                           failures=100)
    thread = threading.Thread(target=backend.load)
    thread.start()
    assert backend.loaded.wait(10)
    backend.close()  # the default sleep waits on the closing event: returns at once
    thread.join(10)
    assert not thread.is_alive() and backend.calls == 1 and backend.settled.is_set()


def test_ready_says_why_and_health_turns_unhealthy_until_the_retry_loads(caplog):
    """/ready names the last error and the next attempt; /health is 503 `unhealthy` after
    CHATBOT_UNHEALTHY_AFTER_S without a model (by the injected clock), 200 again once a retry loads it."""
    settings = settings_for(unhealthy_after_s=300)
    backend = FlakyBackend(settings, failures=1)
    clock, sleeping, release = FakeClock(), threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        sleeping.set()
        assert release.wait(30)

    backend.clock, backend.sleep = clock, sleep
    with caplog.at_level(logging.DEBUG), TestClient(create_app(settings, backend=backend)) as client:
        assert sleeping.wait(30)  # attempt 1 failed; the next one is scheduled in 1 s
        ready = client.get("/ready")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["error"] == "model_not_loaded" and "is down" in body["message"]
        assert "attempt 1 failed, the next one is in 1s" in body["message"]
        assert body["load_attempts"] == 1 and body["next_load_attempt_in_s"] == 1.0
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        clock.now += 299
        assert client.get("/health").status_code == 200
        clock.now += 1
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert "CHATBOT_UNHEALTHY_AFTER_S=300" in health.json()["reason"]
        chat = client.post("/chat", json={"question": Q})
        assert chat.status_code == 503 and "next one is in" in chat.json()["message"]
        texts = [ready.text, health.text, chat.text]

        release.set()
        assert backend.settled.wait(30)
        assert client.get("/ready").status_code == 200
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["load_attempts"] == 2
    assert all(CANARY not in t for t in texts) and CANARY not in caplog.text


# ---------------------------------------------------------------- metrics cardinality
def label_sets(client) -> set[tuple]:
    registry = client.app.state.metrics.registry
    return {(s.name, tuple(sorted(s.labels.items()))) for m in registry.collect() for s in m.samples}


def test_made_up_methods_and_paths_do_not_grow_the_metrics():
    settings = load_settings()
    with TestClient(create_app(settings, backend=FlakyBackend(settings, failures=0))) as client:
        rng = random.Random(12)
        word = lambda n: "".join(rng.choices(string.ascii_uppercase, k=n))  # noqa: E731
        # warm-up: one request of each bounded kind (made-up and known methods on known and unknown paths)
        for method in ("BREW", "GET"):
            for path in ("/chat", "/health", "/x"):
                client.request(method, path)
        before = label_sets(client)
        for _ in range(200):
            method = rng.choice([word(rng.randint(3, 12)), word(rng.randint(3, 12)), "GET"])
            path = rng.choice(["/chat", "/health", f"/{word(8).lower()}/{rng.randint(0, 10**9)}"])
            assert client.request(method, path).status_code in (200, 404, 405)
        after = label_sets(client)
        assert after == before, sorted(after - before)[:5]
        methods = {dict(labels).get("method") for _, labels in after} - {None}
        assert methods == {"GET", "other"}
        assert "unmatched" in {dict(labels).get("endpoint") for _, labels in after}


# ---------------------------------------------------------------- optional key on /metrics and the docs
DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


def app_client(**overrides) -> TestClient:
    settings = load_settings(**overrides)
    return TestClient(create_app(settings, backend=FlakyBackend(settings, failures=0)))


def test_metrics_and_docs_need_the_key_by_default_when_one_is_set():
    with app_client(api_key="k3y") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k3y"}).status_code == 200
        for path in DOC_PATHS:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer k3y"}).status_code == 200, path
        assert client.post("/chat", json={"question": Q}).status_code == 401
    with app_client(api_key="k3y", protect_metrics=False, public_docs=True) as client:  # opened on purpose
        assert client.get("/metrics").status_code == 200
        for path in DOC_PATHS:
            assert client.get(path).status_code == 200, path
    with app_client() as client:  # no key: nothing to hide them behind
        assert client.get("/metrics").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_protect_metrics_requires_the_key():
    with app_client(api_key="k3y", protect_metrics=True) as client:
        r = client.get("/metrics")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and "chatbot_http_requests_total" in ok.text
    with pytest.raises(ConfigError, match="CHATBOT_PROTECT_METRICS=true needs CHATBOT_API_KEY"):
        load_settings(protect_metrics=True)


def test_private_docs_need_the_key_or_are_off():
    with app_client(api_key="k3y", public_docs=False) as client:
        for path in DOC_PATHS:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer k3y"}).status_code == 200, path
        spec = client.get("/openapi.json", headers={"Authorization": "Bearer k3y"}).json()
        assert "/chat" in spec["paths"] and not {"/docs", "/openapi.json"} & set(spec["paths"])
    with app_client(public_docs=False) as client:
        for path in DOC_PATHS:
            r = client.get(path)
            assert r.status_code == 404 and "CHATBOT_PUBLIC_DOCS" in r.json()["message"], path


def test_docs_page_allows_its_inline_script_only_by_hash():
    import base64
    import hashlib

    with app_client() as client:
        page = client.get("/docs")
    script = re.search(r"<script>(.*?)</script>", page.text, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = page.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert f"'sha256-{digest}'" in script_src and "unsafe-inline" not in script_src


# ---------------------------------------------------------------- security headers
def directives(csp: str) -> dict[str, str]:
    return {d.strip().split(" ", 1)[0]: d.strip().partition(" ")[2] for d in csp.split(";") if d.strip()}


def test_every_response_sends_csp_frame_and_nosniff_headers():
    with app_client(max_body_bytes=1024) as client:
        responses = [client.get("/"), client.get("/static/app.js"), client.get("/health"), client.get("/nope"),
                     client.post("/chat", content=b"x" * 2000, headers={"content-type": "application/json"})]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 413]
    for r in responses:
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        csp = directives(r.headers["content-security-policy"])
        assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'", csp
        assert "unsafe-inline" not in r.headers["content-security-policy"]


def test_chat_page_has_no_inline_script_style_or_handlers():
    """What the CSP forbids is absent from the page (the browser test runs it under the CSP)."""
    with app_client() as client:
        html = client.get("/").text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL | re.IGNORECASE)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)


# ---------------------------------------------------------------- ids, encodings, control characters
def test_id_limits_equal_the_feedback_columns():
    from chatbot_model.store.tables import feedback_table
    from chatbot_model.server.schemas import MAX_ID_CHARS

    assert MAX_ID_CHARS == feedback_table.c.session_id.type.length == feedback_table.c.trace_id.type.length
    with app_client() as client:
        r = client.post("/chat", json={"question": Q, "session_id": "s" * MAX_ID_CHARS})
        assert r.status_code == 403 and r.json()["error"] == "invalid_session"  # within the limit, not issued
        r = client.post("/chat", json={"question": Q, "session_id": "s" * (MAX_ID_CHARS + 1)})
        assert r.status_code == 422 and r.json()["fields"] == ["session_id"] and "64" in r.json()["message"]
        r = client.post("/feedback", json={"trace_id": "t" * (MAX_ID_CHARS + 1), "rating": "up"})
        assert r.status_code == 422 and r.json()["fields"] == ["trace_id"]


@pytest.mark.parametrize("body, content_type", [
    (b'{"question": "caf\xe9"}', "application/json"),            # latin-1
    (b'\xff\xfe{\x00"\x00q\x00"\x00:\x00', "application/json"),  # UTF-16 with a BOM
    (b'{"question": "\xc3"}', None),                             # truncated UTF-8, no content type
])
def test_non_utf8_bodies_are_400_invalid_encoding(body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    with app_client() as client:
        r = client.post("/chat", content=body, headers=headers)
        feedback = client.post("/feedback", content=body, headers=headers)
        spec = client.get("/openapi.json").json()
    for response in (r, feedback):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_encoding" and "UTF-8" in response.json()["message"]
    assert "400" in spec["paths"]["/chat"]["post"]["responses"]
    assert "400" in spec["paths"]["/feedback"]["post"]["responses"]


def test_control_characters_behave_as_the_schema_says():
    with app_client() as client:
        spec = client.get("/openapi.json").json()
        answered = client.post("/chat", json={"question": " roll\x00back\u200b a\x1bmodel\t"})
        bad_session = client.post("/chat", json={"question": Q, "session_id": "a\x00b"})
    schemas = spec["components"]["schemas"]
    question = schemas["ChatRequest"]["properties"]["question"]["description"]
    assert "NUL included) become spaces" in question and "other than tab and newline" in question
    assert "zero-width spaces" in question and "dropped" in question
    assert answered.status_code == 200 and answered.json()["question"] == "roll back a model"
    session = schemas["ChatRequest"]["properties"]["session_id"]
    assert "NUL characters are rejected" in str(session)
    assert bad_session.status_code == 422 and "NUL" in bad_session.json()["message"]


# ---------------------------------------------------------------- no password printed or logged
CANARY_ENV = {
    "CHATBOT_FEEDBACK_DB_URL": f"postgresql://chatbot:{CANARY}@db:5432/chatbot_feedback",
    "MLFLOW_TRACKING_URI": f"http://mlflow:{CANARY}@tracking:5000",
    "CHATBOT_SCORING_URL": f"https://scorer:{CANARY}@model:8080",
    "CHATBOT_MODEL_URI": f"runs:/abc/model?token={CANARY}",
}


def test_config_output_masks_every_password(monkeypatch):
    from chatbot_model.cli.main import main

    for k, v in CANARY_ENV.items():
        monkeypatch.setenv(k, v)
    out = CliRunner().invoke(main, ["config"])
    assert out.exit_code == 0, out.output
    assert CANARY not in out.output
    assert "postgresql://chatbot:***@db:5432/chatbot_feedback" in out.output
    assert "http://mlflow:***@tracking:5000" in out.output and "https://scorer:***@model:8080" in out.output
    assert "token=***" in out.output


def test_chat_session_params_and_logs_never_show_a_password(shipped_index, tmp_path, caplog, capsys):
    """run_chat on a pipe: the session's MLflow params, its output and the logs hold no password."""
    from mlflow import MlflowClient

    from chatbot_model.cli.chat import run_chat
    from tests.helpers import make_service, make_settings

    store = tracking_store(tmp_path)
    settings = make_settings(shipped_index, store, tmp_path)
    service = make_service(settings)  # answers and stores the rating for real (sqlite takes no credentials)
    shown = settings.model_copy(update={"tracking_uri": CANARY_ENV["MLFLOW_TRACKING_URI"],
                                        "feedback_db_url": CANARY_ENV["CHATBOT_FEEDBACK_DB_URL"],
                                        "scoring_url": CANARY_ENV["CHATBOT_SCORING_URL"]})
    with caplog.at_level(logging.DEBUG):
        turns = run_chat(service, shown, io.StringIO(f"{Q}\ny\nq\n"))
    assert turns == 1
    runs = MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()], "tags.kind = 'chat-session'")
    params = runs[0].data.params
    assert params["feedback_db_url"] == "postgresql://chatbot:***@db:5432/chatbot_feedback"
    assert params["tracking_uri"] == "http://mlflow:***@tracking:5000"
    assert not [k for k, v in params.items() if CANARY in v]
    assert CANARY not in capsys.readouterr().out and CANARY not in caplog.text


def test_server_logs_and_health_never_show_a_password(tmp_path, monkeypatch, caplog):
    """An unreachable tracking server with credentials: the load error, /health, /ready and the logs mask them."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = load_settings(tracking_uri=f"http://mlflow:{CANARY}@127.0.0.1:9/", model_load_max_attempts=1,
                             feedback_db_url=CANARY_ENV["CHATBOT_FEEDBACK_DB_URL"])
    with caplog.at_level(logging.DEBUG), TestClient(create_app(settings)) as client:
        assert client.app.state.backend.settled.wait(120)
        texts = [client.get("/health").text, client.get("/ready").text,
                 client.post("/chat", json={"question": Q}).text]
    assert "load_error" in texts[0] and "***" in texts[1]
    assert all(CANARY not in t for t in texts), texts
    assert CANARY not in caplog.text
