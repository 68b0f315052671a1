"""The conversation store: turns, history within budget, retention, migration 0004 and concurrent writers, on
SQLite and on a real PostgreSQL server."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect
from sqlalchemy.exc import StatementError

from chatbot_model.store import migrations
from chatbot_model.cli.main import main
from chatbot_model.store.conversations import ConversationStore
from chatbot_model.store.tables import turns_table
from chatbot_model.errors import InvalidInput
from chatbot_model.store.feedback import FeedbackStore
from tests.helpers import wait_until

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}"
    return request.getfixturevalue("postgres").create_database()


def turn(store, session, n, **kw):
    return store.append(session, question=f"question {n}", answer=f"answer {n}", **kw)


def test_turns_are_numbered_per_session_and_history_alternates_within_budget(url):
    store = ConversationStore(url, clock=lambda: NOW)
    assert [turn(store, "s1", n, trace_id=f"tr-{n}", sources=[{"id": "d", "score": 0.5}]) for n in (1, 2, 3)] \
        == [1, 2, 3]
    assert turn(store, "s2", 1) == 1
    assert store.history("s1", 6, 6000) == [m for n in (1, 2, 3) for m in (
        {"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": f"answer {n}"})]
    assert [m["content"] for m in store.history("s1", 4, 6000)] == ["question 2", "answer 2", "question 3",
                                                                     "answer 3"]
    # the character budget drops the oldest turns first and history always starts with a user message
    assert [m["content"] for m in store.history("s1", 6, len("question 3answer 3") + 3)] == ["question 3", "answer 3"]
    assert store.history("s1", 0, 6000) == [] and store.history("unknown", 6, 6000) == []
    found = store.find_trace("tr-2")
    assert (found.session_id, found.turn, found.question, found.sources) == ("s1", 2, "question 2",
                                                                             [{"id": "d", "score": 0.5}])
    assert store.find_trace("tr-nope") is None
    store.dispose()


def test_blocked_turns_are_not_context(url):
    store = ConversationStore(url)
    turn(store, "s", 1)
    store.append("s", question="something vile", answer="I can't help with that.", blocked=True)
    turn(store, "s", 3)
    assert [m["content"] for m in store.history("s", 10, 6000) if m["role"] == "user"] == ["question 1", "question 3"]
    assert [t.turn for t in store.turns("s")] == [1, 2, 3]
    store.dispose()


def test_bad_turns_are_refused_and_a_failed_append_leaves_no_row(tmp_path):
    store = ConversationStore(f"sqlite:///{tmp_path / 'c.db'}")
    for bad in ("", "   ", None, "x" * 65, "a\x00b"):
        with pytest.raises(InvalidInput, match="session_id"):
            store.append(bad, question="q", answer="a")
    with pytest.raises(InvalidInput, match="question"):
        store.append("s", question=" ", answer="a")
    with pytest.raises(StatementError):  # the sources cannot be stored as JSON: the whole insert is rolled back
        store.append("s", question="q", answer="a", sources=[{"id": object()}])
    assert store.count() == 0
    assert store.append("s", question="q", answer="a") == 1  # and the numbering did not move
    store.dispose()


def test_prune_deletes_turns_older_than_the_retention_and_the_cli_runs_it(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    real_now = time.time()  # the CLI below runs on the real clock
    now = [real_now - 40 * 86400]
    store = ConversationStore(url, clock=lambda: now[0], retention_days=30)
    turn(store, "old", 1)
    now[0] = real_now - 10 * 86400
    turn(store, "recent", 1)
    now[0] = real_now
    assert store.prune() == 1
    assert [t.session_id for t in store.turns("recent")] == ["recent"] and store.turns("old") == []
    assert ConversationStore(url, retention_days=0).prune() == 0  # 0 keeps everything
    store.dispose()

    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", url)
    out = CliRunner().invoke(main, ["conversations", "prune", "--older-than-days", "1"])
    assert out.exit_code == 0, out.output
    assert "deleted 1 conversation turns older than 1 days; 0 kept" in out.output
    monkeypatch.setenv("CHATBOT_CONVERSATION_RETENTION_DAYS", "0")
    out = CliRunner().invoke(main, ["conversations", "prune"])
    assert out.exit_code == 0 and "nothing pruned" in out.output


def test_conversations_show_prints_the_turns(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = ConversationStore(url)
    store.append("demo", question="How do I roll back?", answer="Move the alias [1].", trace_id="tr-9")
    store.append("demo", question="and undo that?", standalone_question="How do I roll back? and undo that?",
                 answer="Move it back [1].")
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", url)
    out = CliRunner().invoke(main, ["conversations", "show", "demo"])
    assert out.exit_code == 0, out.output
    assert "you> and undo that?" in out.output and "retrieved as: How do I roll back? and undo that?" in out.output
    assert CliRunner().invoke(main, ["conversations", "show", "nobody"]).exit_code == 1


def test_upgrade_from_0003_adds_the_table_and_keeps_the_ratings(url):
    feedback = FeedbackStore(url, attach=False)
    engine = feedback.database.make_engine()
    try:
        assert migrations.upgrade(engine, "0003") == "0003"
        assert "conversation_turns" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO feedback (created_at, created_ts, trace_id, rating, sync_attempts) "
                "VALUES ('2026-11-01 12:00:00', 1793534400.0, 'tr-old', 'up', 0)")
    finally:
        engine.dispose()
    store = ConversationStore(database=feedback.database)  # opening it migrates to head
    assert store.append("s", question="q", answer="a", trace_id="tr-new") == 1
    assert [r.trace_id for r in feedback.ratings()] == ["tr-old"]
    insp = inspect(store.engine)
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("conversation_turns")}
    assert ("session_id", "turn") in uniques
    assert {i["name"] for i in insp.get_indexes("conversation_turns")} >= {"ix_conversation_turns_trace_id"}
    with store.engine.connect() as conn:
        assert migrations.status(conn).revision == migrations.head() == "0004"
    engine = feedback.database.make_engine()  # and back down: the table goes, the ratings stay
    try:
        migrations.upgrade(engine, "head")
        from alembic import command
        with engine.begin() as conn:
            command.downgrade(migrations.config(conn), "0003")
        assert "conversation_turns" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert [r.trace_id for r in feedback.ratings()] == ["tr-old"]
    store.dispose()


def test_a_duplicate_turn_number_is_refused_by_the_database(url):
    store = ConversationStore(url)
    turn(store, "s", 1)
    from sqlalchemy.exc import IntegrityError
    row = dict(session_id="s", turn=1, question="q", standalone_question="", answer="a", sources=[],
               blocked=False, abstained=False, latency_ms=0.0, created_at=datetime(2026, 1, 1), created_ts=0.0)
    with pytest.raises(IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(turns_table.insert().values(**row))
    store.dispose()


def test_concurrent_writers_of_one_session_never_share_a_turn_number(url):
    """Several stores (each its own engine, like replicas) append to one session at once, released together."""
    writers, per_writer = 6, 8
    stores = [ConversationStore(url) for _ in range(writers)]
    stores[0].count()  # migrate once before the race
    barrier = threading.Barrier(writers)
    got: list[int] = []
    errors: list[BaseException] = []

    def write(store, w):
        try:
            barrier.wait(timeout=60)
            for n in range(per_writer):
                got.append(store.append("shared", question=f"w{w} q{n}", answer="a", trace_id=f"tr-{w}-{n}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, w)) for w, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(got) == list(range(1, writers * per_writer + 1))
    stored = stores[0].turns("shared")
    assert [t.turn for t in stored] == list(range(1, writers * per_writer + 1))
    assert len({t.trace_id for t in stored}) == writers * per_writer
    for s in stores:
        s.dispose()


WRITER = """
import sys, time
from pathlib import Path
from chatbot_model.store.conversations import ConversationStore
url, go, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
store = ConversationStore(url)
store.count()
Path(f"{go}-ready-{me}").touch()
while not go.exists():
    time.sleep(0.005)
for n in range(10):
    store.append("shared", question=f"p{me} q{n}", answer="a", trace_id=f"tr-{me}-{n}")
"""


def test_several_processes_append_to_one_session(url, tmp_path):
    ConversationStore(url).count()
    n = 3
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), url, str(tmp_path / "go"), str(i)],
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for i in range(n)]
    wait_until(lambda: len(list(tmp_path.glob("go-ready-*"))) >= n or any(p.poll() is not None for p in procs),
               "every writer to connect", 120)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    turns = ConversationStore(url).turns("shared")
    assert [t.turn for t in turns] == list(range(1, 31))
    assert sorted(t.trace_id for t in turns) == sorted(f"tr-{i}-{k}" for i in range(n) for k in range(10))
