"""Security findings, one test each (docs/security.md maps them): conversations that belong to someone,
ratings that count once, probes off the request pool, closed by default when a key is set, safe ids in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from datetime import datetime

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright

from chatbot_model.cli.main import main
from chatbot_model.config import load_settings
from chatbot_model.pipeline.adaptation import AdaptationRule
from chatbot_model.server import conversation, create_app
from chatbot_model.server.backends import Backend
from chatbot_model.server.ratelimit import RateLimiter
from chatbot_model.server.routes import feedback as route
from chatbot_model.server.routes.feedback import lookup_trace
from chatbot_model.server.sessions import SessionIds, caller_fingerprint
from chatbot_model.store.conversations import ConversationStore
from chatbot_model.store.feedback import FeedbackStore
from chatbot_model.store.tables import feedback_table
from tests.helpers import CHROMIUM_ARGS, LiveServer, chromium, tracking_store

Q = "How do I roll back a model version?"


class EchoBackend(Backend):
    """Answers at once with a new MLflow-style trace id; records the history each question came with."""

    name = "echo"

    def __init__(self, settings):
        super().__init__(settings)
        self.histories: list = []

    def _predict(self, questions, histories=None):
        self.histories.append(histories[0] if histories else [])
        return [{"answer": f"answer to {q}", "route": "gpt", "provider": "local", "model": "m",
                 "trace_id": "tr-" + os.urandom(16).hex()} for q in questions]


def settings_for(tmp_path, **overrides):
    return load_settings(**{"feedback_db_url": f"sqlite:///{tmp_path / 'feedback.db'}", "tracing": False,
                            "tracking_uri": tracking_store(tmp_path), **overrides})


def client_for(settings, backend=None) -> TestClient:
    return TestClient(create_app(settings, backend=backend or EchoBackend(settings)))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------- conversations that belong to someone
def test_a_chosen_session_id_is_refused_and_the_issued_one_continues_the_conversation(tmp_path):
    with client_for(settings_for(tmp_path)) as client:
        chosen = client.post("/chat", json={"question": Q, "session_id": "demo"})
        assert chosen.status_code == 403 and chosen.json()["error"] == "invalid_session"
        assert "omit session_id" in chosen.json()["message"]
        first = client.post("/chat", json={"question": Q})
        assert first.status_code == 200, first.text
        session = first.json()["session_id"]
        assert session.startswith("s1.") and len(session) <= 64
        second = client.post("/chat", json={"question": "and then?", "session_id": session})
        assert second.status_code == 200 and second.json()["session_id"] == session
        assert client.app.state.backend.histories[-1][0] == {"role": "user", "content": Q}
        forged = session[:-2] + ("AA" if not session.endswith("AA") else "BB")
        assert client.post("/chat", json={"question": Q, "session_id": forged}).status_code == 403


def test_caller_b_cannot_read_or_write_caller_a_conversation(tmp_path):
    """The finding: A and B both sent session_id "demo" and B got A's turns. Now ids are issued per
    conversation and bound to the API key that created them: B's key does not continue A's session."""
    settings = settings_for(tmp_path, api_key="key-a")
    with client_for(settings) as client:
        a = client.post("/chat", json={"question": "my secret project is called Bluebird"}, headers=bearer("key-a"))
        session = a.json()["session_id"]
        # the server's key is A's; a caller with another key is not even let in
        assert client.post("/chat", json={"question": Q, "session_id": session},
                           headers=bearer("key-b")).status_code == 401

    issuer = SessionIds(b"0123456789abcdef0123456789abcdef")
    a_session = issuer.issue(caller_fingerprint("key-a"))
    assert issuer.verify(a_session, caller_fingerprint("key-a"))
    assert not issuer.verify(a_session, caller_fingerprint("key-b"))  # bound to the key that created it
    assert not issuer.verify(a_session, b"")
    # without a key, B cannot guess A's id: 128 random bits, and a made-up one is refused
    with client_for(settings_for(tmp_path / "open")) as client:
        a = client.post("/chat", json={"question": "my secret project is called Bluebird"}).json()["session_id"]
        b = client.post("/chat", json={"question": "what is my secret project?"}).json()["session_id"]
        assert a != b
        assert client.app.state.backend.histories[-1] == []  # B saw none of A's turns
        assert client.post("/chat", json={"question": Q, "session_id": "demo"}).status_code == 403


def test_a_new_conversation_reads_no_history_a_continued_one_does(tmp_path, monkeypatch):
    """A session issued with this answer has no turns: its first question never waits on the database."""
    with client_for(settings_for(tmp_path)) as client:
        session = client.post("/chat", json={"question": Q}).json()["session_id"]

        def unreachable(app):
            raise ConnectionError("the conversation database is down")

        monkeypatch.setattr(conversation, "conversation_store", unreachable)
        assert client.post("/chat", json={"question": Q}).status_code == 200
        continued = client.post("/chat", json={"question": "and then?", "session_id": session})
        assert continued.status_code == 503 and continued.json()["error"] == "conversation_unavailable"


def test_replicas_sharing_the_secret_continue_a_session_and_others_refuse_it(tmp_path):
    shared = dict(session_secret="s" * 32)
    one, two = settings_for(tmp_path, **shared), settings_for(tmp_path, **shared)
    stranger = settings_for(tmp_path, session_secret="t" * 32)
    with client_for(one) as a, client_for(two) as b, client_for(stranger) as c:
        session = a.post("/chat", json={"question": Q}).json()["session_id"]
        follow = b.post("/chat", json={"question": "and then?", "session_id": session})
        assert follow.status_code == 200, follow.text
        assert b.app.state.backend.histories[-1][0]["content"] == Q  # B read the turn A stored
        assert c.post("/chat", json={"question": Q, "session_id": session}).status_code == 403


def test_a_streamed_answer_carries_its_session_id(tmp_path):
    with client_for(settings_for(tmp_path)) as client:
        r = client.post("/chat", json={"question": Q, "stream": True})
        final = [b for b in r.text.split("\n\n") if b.startswith("event: final")][0]
        row = json.loads(final.split("data: ", 1)[1])
        assert row["session_id"].startswith("s1.")
        again = client.post("/chat", json={"question": Q, "session_id": row["session_id"], "stream": True})
        assert again.status_code == 200 and "event: final" in again.text


# ---------------------------------------------------------------- probes off the request pool, answers capped
class HangingBackend(EchoBackend):
    """Every answer hangs (as on a provider that never replies) until the test releases it; counts entries."""

    name = "hanging"

    def __init__(self, settings):
        super().__init__(settings)
        self.release, self.entered, self.finished = threading.Event(), 0, 0
        self.changed = threading.Condition()

    def _predict(self, questions, histories=None):
        with self.changed:
            self.entered += 1
            self.changed.notify_all()
        self.release.wait(120)
        with self.changed:
            self.finished += 1
        return super()._predict(questions, histories)

    def wait_entered(self, n: int, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.entered >= n, timeout), f"{self.entered} of {n} entered"


def _chat_in_threads(url: str, n: int) -> tuple[list, list[threading.Thread]]:
    statuses: list = []

    def ask():
        try:
            statuses.append(httpx.post(f"{url}/chat", json={"question": Q}, timeout=180).status_code)
        except httpx.HTTPError as exc:
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return statuses, threads


def test_probes_answer_while_every_worker_thread_hangs_on_a_provider(tmp_path):
    """The finding: with 45 /chat requests waiting on a hanging provider, /health took 18.6 s (same 40-thread
    pool). Now the pool is full (40 answers inside the provider, 5 queued) and the probes still answer, before
    any answer finishes (ordering, not the clock; the 60 s client timeout only keeps a regression from
    hanging the suite)."""

    settings = settings_for(tmp_path, feedback_db_url="", max_concurrent_chats=0, backend_timeout_s=150)
    backend = HangingBackend(settings)
    server = LiveServer(create_app(settings, backend=backend))
    try:
        server.wait_ready()
        statuses, threads = _chat_in_threads(server.url, 45)
        backend.wait_entered(40)  # anyio's default pool: 40 threads, all inside the provider now
        for path in ("/health", "/ready", "/metrics"):
            r = httpx.get(f"{server.url}{path}", timeout=60)
            assert r.status_code == 200, (path, r.text)
        assert backend.finished == 0 and statuses == []  # every answer is still hanging
        assert r.text.count("chatbot_model_ready 1.0") == 1
    finally:
        backend.release.set()
        for t in threads if "threads" in locals() else ():
            t.join(120)
        server.close()
    assert statuses.count(200) == 45


def test_answers_beyond_the_cap_get_503_with_retry_after_at_once(tmp_path):

    settings = settings_for(tmp_path, feedback_db_url="", max_concurrent_chats=2)
    backend = HangingBackend(settings)
    server = LiveServer(create_app(settings, backend=backend))
    try:
        server.wait_ready()
        statuses, threads = _chat_in_threads(server.url, 2)
        backend.wait_entered(2)
        busy = httpx.post(f"{server.url}/chat", json={"question": Q}, timeout=60)
        assert busy.status_code == 503 and busy.json()["error"] == "busy", busy.text
        assert busy.headers["retry-after"] == "1" and "CHATBOT_MAX_CONCURRENT_CHATS" in busy.json()["message"]
        v1 = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]},
                        timeout=60)
        assert v1.status_code == 503
        assert backend.entered == 2 and backend.finished == 0  # refused without queueing
        backend.release.set()
        for t in threads:
            t.join(60)
        assert statuses == [200, 200]
        assert httpx.post(f"{server.url}/chat", json={"question": Q}, timeout=60).status_code == 200
    finally:
        backend.release.set()
        server.close()


# ---------------------------------------------------------------- ratings that count once per rater
def test_eight_thumbs_down_on_one_trace_from_one_client_count_once(tmp_path):
    """The finding: 8 thumbs-down on one trace from one client all counted (bias 0.30 -> 0.54, hint switched).
    Now a rating of the same trace and session replaces the earlier one: the adaptation and `feedback
    compare` (store.stats by version) see one."""

    settings = settings_for(tmp_path)
    with client_for(settings) as client:
        answer = client.post("/chat", json={"question": Q}).json()
        for n in range(8):
            r = client.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "down", "comment": f"#{n}"})
            assert r.status_code == 200, r.text
        client.app.state.feedback_store.stop_background(5)
    store = FeedbackStore(settings.feedback_db_url, attach=False)
    rows = store.ratings()
    assert [(r.trace_id, r.rating, r.comment, r.session_id) for r in rows] == [
        (answer["trace_id"], "down", "#7", answer["session_id"])]
    assert store.stats()["by_rating"] == {"up": 0, "down": 1}
    rule = AdaptationRule.from_settings(settings)
    now = time.time() + 1
    assert rule.compute(store, now=now) == rule.weigh([(rows[0].created_at.timestamp(), "down")], now)
    assert rule.compute(store, now=now).bias_towards_35 < 0.4  # one rating: 0.30 + 0.3 * 1/3 = 0.40 at most
    # the same rater changing their mind: still one rating, now up
    store.record(trace_id=answer["trace_id"], rating="up", session_id=answer["session_id"])
    assert [(r.rating, r.id) for r in store.ratings()] == [("up", rows[0].id)]


def test_rows_from_before_the_rule_count_once_too(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}", attach=False)
    with store.engine.begin() as conn:  # what the old code wrote: eight rows of one trace and session
        for n in range(8):
            conn.execute(feedback_table.insert().values(created_at=datetime(2026, 12, 1),
                                                        created_ts=1.0 + n, trace_id="tr-" + "a" * 32,
                                                        session_id="s", rating="down", sync_attempts=0))
    assert len(store.ratings()) == 1 and store.stats()["total"] == 1
    assert store.rating_times() == [(8.0, "down")]


def test_feedback_is_rate_limited_per_client_with_retry_after(tmp_path):
    settings = settings_for(tmp_path, feedback_rate_per_minute=3)
    with client_for(settings) as client:
        traces = [client.post("/chat", json={"question": Q}).json()["trace_id"] for _ in range(4)]
        assert [client.post("/feedback", json={"trace_id": t, "rating": "down"}).status_code
                for t in traces[:3]] == [200, 200, 200]
        r = client.post("/feedback", json={"trace_id": traces[3], "rating": "down"})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
        assert int(r.headers["retry-after"]) == 20 and "CHATBOT_FEEDBACK_RATE_PER_MINUTE" in r.json()["message"]
        client.app.state.feedback_store.stop_background(5)
    now = [0.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])
    assert [limiter.acquire("a"), limiter.acquire("a"), limiter.acquire("b")] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(30.0)  # one token every 30 s
    now[0] = 30.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0


# ---------------------------------------------------------------- trace ids: validated, never raw in URLs or logs
@pytest.mark.parametrize("trace_id", ["../../2.0/mlflow/experiments/search?max_results=1#",
                                      "tr-0123456789abcdef0123456789abcdef\nWARNING forged line",
                                      "tr-0123456789ABCDEF0123456789ABCDEF", "tr-x", "not a trace"])
def test_a_trace_id_that_is_not_mlflows_is_422_and_never_reaches_the_tracking_server(tmp_path, monkeypatch,
                                                                                     trace_id):
    called = []
    monkeypatch.setattr(route, "lookup_trace", lambda *a: called.append(a))
    with client_for(settings_for(tmp_path)) as client:
        r = client.post("/feedback", json={"trace_id": trace_id, "rating": "up"})
    assert r.status_code == 422 and r.json()["fields"] == ["trace_id"], r.text
    assert "MLflow trace id" in r.json()["message"] and called == []
    assert route.lookup_trace is not None


def test_lookup_refuses_a_malformed_id_itself(tmp_path):
    settings = settings_for(tmp_path, tracking_uri="http://127.0.0.1:9")  # would fail if it were contacted
    assert lookup_trace("../../2.0/mlflow/experiments/search?x#", settings) is None


def test_ids_in_warnings_are_quoted_so_a_newline_cannot_forge_a_log_line(tmp_path, caplog, monkeypatch):
    """The schema refuses such ids first; the logging quotes them anyway (defence in depth)."""

    def down(*args):
        raise ConnectionError("tracking store down")

    monkeypatch.setattr(route, "lookup_trace", down)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(route.TraceStoreUnavailable):
            asyncio.run(route.find_trace("tr-" + "0" * 32 + "\nCRITICAL forged", settings_for(tmp_path)))
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)
    assert "\\nCRITICAL forged" in caplog.text


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize("password", ["p/ss", "p?ss", "p#ss", "a/b?c#d", "plain"])
def test_config_masks_passwords_that_hold_url_delimiters(monkeypatch, password):
    """The finding: `llmops-chatbot config` printed passwords containing `/`, `?` or `#`. The URL is now read by
    SQLAlchemy's `make_url`, the parser the stores use."""

    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", f"postgresql://chatbot:{password}@db:5432/feedback")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://reader:{password}@mlflow:5000")
    out = CliRunner().invoke(main, ["config"])
    assert out.exit_code == 0, out.output
    assert password not in out.output
    assert "postgresql://chatbot:***@db:5432/feedback" in out.output and "http://reader:***@mlflow:5000" in out.output


# ---------------------------------------------------------------- closed by default
def test_v1_refuses_bodies_that_are_not_json(tmp_path):
    """The finding: /v1/chat/completions took text/plain, which a page on another site can send without a CORS
    preflight (CSRF when no key is set)."""
    body = json.dumps({"messages": [{"role": "user", "content": Q}]})
    with client_for(settings_for(tmp_path)) as client:
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": media})
            assert r.status_code == 415, (media, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"
        ok = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert ok.status_code == 200, ok.text


def test_health_says_only_status_and_version_without_the_key(tmp_path):
    with client_for(settings_for(tmp_path, api_key="k3y")) as client:
        assert client.get("/health").json() == {"status": "ok", "version": client.app.version}
        assert client.get("/health", headers=bearer("wrong")).json() == {"status": "ok", "version": client.app.version}
        full = client.get("/health", headers=bearer("k3y")).json()
        assert full["backend"] == "echo" and "ready" in full
        assert client.get("/ready").status_code == 200  # the readiness probe needs no key and says no more


# ---------------------------------------------------------------- retention runs by itself
def test_the_server_prunes_old_turns_and_ratings_by_itself(tmp_path):
    """The finding: conversation and feedback tables grew until someone pruned by hand."""

    settings = settings_for(tmp_path, retention_interval_s=0.05, conversation_retention_days=1,
                            feedback_retention_days=2)
    day = 86400.0
    old_clock = lambda: time.time() - 3 * day  # noqa: E731 - rows written three days ago
    turns = ConversationStore(settings.feedback_db_url)
    turns.clock = old_clock
    turns.append("s1.old", question="old question", answer="old answer")
    ratings = FeedbackStore(settings.feedback_db_url, attach=False, clock=old_clock)
    ratings.record(trace_id="tr-" + "b" * 32, rating="down")
    with client_for(settings) as client:
        fresh = client.post("/chat", json={"question": Q}).json()["session_id"]
        deadline = time.monotonic() + 60  # bounds a failure only: the task runs every 0.05 s
        while (turns.count() > 1 or FeedbackStore(settings.feedback_db_url, attach=False).ratings()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.app.state.retention_task is not None
    assert [t.question for t in turns.turns(fresh)] == [Q] and turns.turns("s1.old") == []
    assert FeedbackStore(settings.feedback_db_url, attach=False).ratings() == []


def test_a_body_that_trickles_in_gets_408_and_frees_the_connection(tmp_path):

    settings = settings_for(tmp_path, feedback_db_url="", body_read_timeout_s=0.3)
    server = LiveServer(create_app(settings, backend=EchoBackend(settings)))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:  # 60 s: a hang guard only
            conn.sendall(b"POST /chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"question\": ")  # ... and the rest never comes
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += conn.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    finally:
        server.close()


@pytest.mark.slow  # a headless browser
def test_the_chat_page_keeps_the_issued_session_and_the_key_for_the_tab_only(tmp_path):
    """The page continues the conversation with the id the server issued, and keeps the API key in
    sessionStorage (the finding: it stayed in localStorage, readable by any later script of the origin)."""

    settings = settings_for(tmp_path, api_key="k3y")
    backend = EchoBackend(settings)
    server = LiveServer(create_app(settings, backend=backend))
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.evaluate("localStorage.setItem('chatbot-api-key', 'left-by-an-old-page')")
                page.reload()
                expect(page.get_by_test_id("status")).to_contain_text("API key", timeout=30_000)
                page.get_by_label("API key").fill("k3y")
                page.get_by_role("button", name="Save").click()
                expect(page.get_by_test_id("status")).to_contain_text("ready", timeout=30_000)
                for n, question in enumerate([Q, "and then?"], start=1):
                    page.get_by_label("Question").fill(question)
                    page.get_by_role("button", name="Send").click()
                    expect(page.get_by_test_id("answer")).to_have_count(n, timeout=30_000)
                    expect(page.get_by_test_id("answer").nth(n - 1).get_by_test_id("meta")).to_be_visible()
                stored = page.evaluate("[sessionStorage.getItem('chatbot-session'), "
                                       "sessionStorage.getItem('chatbot-api-key'), "
                                       "localStorage.getItem('chatbot-api-key')]")
            finally:
                browser.close()
    finally:
        server.close()
    session, key, old_key = stored
    assert session.startswith("s1.") and key == "k3y" and old_key is None
    assert backend.histories[-1] and backend.histories[-1][0] == {"role": "user", "content": Q}
