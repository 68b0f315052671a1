"""Ratings on any replica: two real server processes (uvicorn on 127.0.0.1) share the feedback and conversation
database. A chats, B rates: accepted and stored even though B never served the answer and its tracking store
cannot say; a trace id no store knows gets 503 with Retry-After there, never a wrong 404."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from chatbot_model.store.feedback import FeedbackStore
from tests.helpers import ROOT, free_port, server_process, tracking_store

LAUNCH = """
import sys, uvicorn
from chatbot_model.server import create_app
uvicorn.run(create_app(backend="service"), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@contextmanager
def replica(env: dict, cwd: Path, name: str, timeout: float = 180):
    """A server process on a free loopback port; yields its URL once /ready answers 200; then ended."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process([sys.executable, "-c", LAUNCH, str(port)], env, cwd, url, "/ready", cwd / f"{name}.log",
                        timeout):
        yield url


@pytest.mark.slow
def test_chat_on_replica_a_rate_on_replica_b(index_dir, tmp_path):
    shared_db = f"sqlite:///{tmp_path / 'shared' / 'feedback.db'}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    base.update(PYTHONPATH=str(ROOT), CHATBOT_INDEX_DIR=str(index_dir), CHATBOT_GUARDRAIL_BACKEND="embedded",
                CHATBOT_FEEDBACK_DB_URL=shared_db)
    a_env = {**base, "MLFLOW_TRACKING_URI": tracking_store(tmp_path)}
    # B never served these answers and its tracking store is unreachable: only the shared turns can vouch
    b_env = {**base, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "CHATBOT_TRACING": "false"}
    with replica(a_env, tmp_path, "replica-a") as a, replica(b_env, tmp_path, "replica-b") as b:
        traces, sessions = [], []
        for n, question in enumerate(["How is each chatbot request traced?", "Can I turn that off?",
                                      "How do I promote a model version?", "What is the promotion gate?"]):
            follow_up = {"session_id": sessions[-1]} if n % 2 else {}  # two conversations of two turns
            answer = httpx.post(f"{a}/chat", json={"question": question, **follow_up}, timeout=60).json()
            assert answer["trace_id"].startswith("tr-"), answer
            traces.append((answer["trace_id"], answer["route"]))
            sessions.append(answer["session_id"])
        for trace_id, _ in traces:
            rated = httpx.post(f"{b}/feedback", json={"trace_id": trace_id, "rating": "down"}, timeout=30)
            assert rated.status_code == 200, rated.text
            assert rated.json() == {"status": "recorded", "trace_id": trace_id, "rating": "down"}
        unknown = httpx.post(f"{b}/feedback", json={"trace_id": "tr-" + "0" * 32, "rating": "up"}, timeout=30)
        assert unknown.status_code == 503, unknown.text
        assert unknown.headers["retry-after"] and unknown.json()["error"] == "feedback_unavailable"
        assert "cannot check trace" in unknown.json()["message"]
    rows = FeedbackStore(shared_db, attach=False).ratings()
    assert sorted((r.trace_id, r.route, r.session_id) for r in rows) == sorted(
        (t, route, sessions[n - n % 2]) for n, (t, route) in enumerate(traces))
