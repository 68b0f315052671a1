"""POST /conversation: the caller's own stored turns, oldest first and bounded by CHATBOT_HISTORY_MAX_MESSAGES;
another key's session refused like on /chat, a malformed id a 422 naming it, a session without stored turns a
404 `invalid_session`, an unreadable store a 503."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from chatbot_model.config import load_settings
from chatbot_model.server import conversation, create_app
from chatbot_model.server.backends import Backend
from chatbot_model.server.sessions import caller_fingerprint, session_ids
from chatbot_model.store.conversations import ConversationStore
from tests.helpers import tracking_store, wait_until

KEY = "key-a"
QUESTIONS = ["How do I roll back a model version?", "And how do I check it?", "Can I automate that?"]


class SourcedBackend(Backend):
    """Answers at once with one source and a new MLflow-style trace id."""

    name = "sourced"

    def _predict(self, questions, histories=None):
        return [{"answer": f"answer to {q}", "route": "gpt", "provider": "local", "model": "m",
                 "sources": [{"id": "d1", "title": "Doc one", "source": "https://example.org/d1", "score": 0.8}],
                 "trace_id": "tr-" + os.urandom(16).hex()} for q in questions]


def settings_for(tmp_path, **overrides):
    return load_settings(**{"feedback_db_url": f"sqlite:///{tmp_path / 'feedback.db'}", "tracing": False,
                            "tracking_uri": tracking_store(tmp_path), "api_key": KEY, **overrides})


@contextmanager
def served(settings):
    """A client of the app over `SourcedBackend`, once the backend is loaded (it loads in the background)."""
    with TestClient(create_app(settings, backend=SourcedBackend(settings)),
                    headers={"Authorization": f"Bearer {KEY}"}) as c:
        wait_until(lambda: c.get("/ready").status_code == 200, "the backend loaded")
        yield c


@pytest.fixture
def client(tmp_path):
    with served(settings_for(tmp_path)) as c:
        yield c


def converse(client, questions) -> tuple[str, list[dict]]:
    """Ask `questions` in one conversation; its session id and the answers."""
    answers, session = [], None
    for question in questions:
        r = client.post("/chat", json={"question": question, **({"session_id": session} if session else {})})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        session = r.json()["session_id"]
    return session, answers


def test_the_callers_own_conversation_comes_back_in_order_with_sources_and_trace_ids(client):
    session, answers = converse(client, QUESTIONS)
    r = client.post("/conversation", json={"session_id": session})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"] == session
    assert [(t["turn"], t["question"], t["answer"]) for t in body["turns"]] == [
        (n, q, f"answer to {q}") for n, q in enumerate(QUESTIONS, start=1)]
    assert [t["trace_id"] for t in body["turns"]] == [a["trace_id"] for a in answers]
    assert body["turns"][0]["sources"] == answers[0]["sources"]
    assert {t["route"] for t in body["turns"]} == {"gpt"} and {t["blocked"] for t in body["turns"]} == {False}


def test_only_the_newest_turns_within_the_history_limit_come_back(tmp_path):
    """CHATBOT_HISTORY_MAX_MESSAGES=3 holds two turns (a question and an answer each, rounded up)."""
    settings = settings_for(tmp_path, history_max_messages=3)
    with served(settings) as client:
        session, _ = converse(client, QUESTIONS)
        turns = client.post("/conversation", json={"session_id": session}).json()["turns"]
    assert [(t["turn"], t["question"]) for t in turns] == [(2, QUESTIONS[1]), (3, QUESTIONS[2])]


def test_another_keys_session_is_refused_like_on_chat_whether_or_not_it_has_turns(client, tmp_path):
    foreign = session_ids(client.app).issue(caller_fingerprint("key-b"))
    unused = session_ids(client.app).issue(caller_fingerprint("key-b"))
    ConversationStore(f"sqlite:///{tmp_path / 'feedback.db'}").append(foreign, question="B's secret", answer="noted")
    on_chat = client.post("/chat", json={"question": QUESTIONS[0], "session_id": foreign})
    stored, never = (client.post("/conversation", json={"session_id": s}) for s in (foreign, unused))
    assert on_chat.status_code == stored.status_code == never.status_code == 403
    assert stored.json() == never.json() == on_chat.json()  # the same refusal: nothing says B's session exists
    assert stored.json()["error"] == "invalid_session" and "B's secret" not in stored.text


def test_without_the_key_nothing_is_read(client):
    session, _ = converse(client, QUESTIONS[:1])
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer key-b"}):
        r = client.post("/conversation", json={"session_id": session}, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


@pytest.mark.parametrize("session_id", ["demo", "s1.short.tag", "s1." + "A" * 22 + "." + "B" * 21 + "\x00",
                                        "s1." + "A" * 80])
def test_a_malformed_session_id_is_422_naming_it(client, session_id):
    r = client.post("/conversation", json={"session_id": session_id})
    assert r.status_code == 422 and r.json()["error"] == "invalid_input", r.text
    assert r.json()["fields"] == ["session_id"] and r.json()["message"].startswith("session_id: ")


def test_a_missing_session_id_is_422_naming_it(client):
    r = client.post("/conversation", json={})
    assert r.status_code == 422 and r.json()["fields"] == ["session_id"] and "required" in r.json()["message"]


def test_a_new_conversation_shows_nothing_of_another_and_one_without_turns_is_invalid(client):
    first, _ = converse(client, QUESTIONS[:2])
    second, _ = converse(client, QUESTIONS[2:])
    turns = client.post("/conversation", json={"session_id": second}).json()["turns"]
    assert [t["question"] for t in turns] == QUESTIONS[2:]  # none of the first conversation's
    empty = session_ids(client.app).issue(caller_fingerprint(KEY))  # verified, but nothing stored (or pruned)
    r = client.post("/conversation", json={"session_id": empty})
    assert r.status_code == 404 and r.json()["error"] == "invalid_session"
    assert "new conversation" in r.json()["message"]


def test_pruned_turns_and_a_server_without_a_database_are_invalid_sessions(tmp_path):
    settings = settings_for(tmp_path)
    with served(settings) as client:
        session, _ = converse(client, QUESTIONS[:1])
        later = ConversationStore(settings.feedback_db_url, clock=lambda: time.time() + 31 * 86400)
        assert later.prune(older_than_days=30) == 1  # retention, a month on
        r = client.post("/conversation", json={"session_id": session})
        assert r.status_code == 404 and r.json()["error"] == "invalid_session"
    keeps_none = settings_for(tmp_path / "none", feedback_db_url="")
    with served(keeps_none) as client:
        session, _ = converse(client, QUESTIONS[:1])
        r = client.post("/conversation", json={"session_id": session})
        assert r.status_code == 404 and r.json()["error"] == "invalid_session"


def test_an_unreadable_store_is_503_with_retry_after(client, monkeypatch):
    session, _ = converse(client, QUESTIONS[:1])

    def unreachable(app):
        raise ConnectionError("the conversation database is down")

    monkeypatch.setattr(conversation, "conversation_store", unreachable)
    r = client.post("/conversation", json={"session_id": session})
    assert r.status_code == 503 and r.json()["error"] == "conversation_unavailable"
    assert r.headers["retry-after"] == "5"
