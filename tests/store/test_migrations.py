"""Schema migrations of the feedback database, on SQLite and on a real PostgreSQL server.

From an empty database, from a database the pre-migration code created (`metadata.create_all` of the table as
it shipped, no alembic_version), through `llmops-chatbot db upgrade`, twice, and from several processes at once.
"""

import os
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text, inspect

from chatbot_model.store import migrations
from chatbot_model.pipeline.adaptation import AdaptationRule
from chatbot_model.cli.main import main
from chatbot_model.store.db import Database
from chatbot_model.store.feedback import FeedbackStore
from chatbot_model.store.tables import metadata
from tests.helpers import wait_until

HEAD = migrations.head()

# the table exactly as chatbot_model/store/feedback.py declared it before migrations (created by create_all)
LEGACY = MetaData()
Table(
    "feedback", LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime, nullable=False),
    Column("created_ts", Float, nullable=False, index=True),
    Column("trace_id", String(64), index=True),
    Column("session_id", String(64)),
    Column("route", String(32)),
    Column("provider", String(32)),
    Column("model", String(128)),
    Column("model_version", String(64), index=True),
    Column("rating", String(4), nullable=False),
    Column("comment", Text),
    Column("synced_at", DateTime, index=True),
    Column("assessment_id", String(64)),
    Column("sync_attempts", Integer, nullable=False, default=0),
    Column("sync_error", Text),
    Column("claimed_at", Float),
    Column("attempted_at", Float),
)
LEGACY_ROW = dict(created_at=datetime(2026, 11, 1, 12, 0), created_ts=1793534400.0, trace_id="tr-legacy",
                  session_id="s", route="claude", provider="anthropic", model="claude-x", model_version="1",
                  rating="down", comment="from the old schema", sync_attempts=0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def url(request, tmp_path):
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}"
    return request.getfixturevalue("postgres").create_database()


def engine_of(url: str):
    return Database(url).make_engine()  # no migration; `postgresql://` with the installed driver


def schema(url: str) -> dict:
    """Columns (name, type, nullable, pk) and indexes (name -> columns, unique) of the feedback table."""
    engine = engine_of(url)
    try:
        insp = inspect(engine)
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns("feedback")]
        indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes("feedback")}
        return {"columns": columns, "pk": insp.get_pk_constraint("feedback")["constrained_columns"],
                "indexes": indexes}
    finally:
        engine.dispose()


def revision(url: str) -> list:
    engine = engine_of(url)
    try:
        with engine.connect() as conn:
            return [r for (r,) in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        engine.dispose()


def make_legacy(url: str) -> None:
    """A database as the code before migrations left it: create_all, one rating."""
    engine = engine_of(url)
    try:
        LEGACY.create_all(engine)
        with engine.begin() as conn:
            conn.execute(LEGACY.tables["feedback"].insert().values(**LEGACY_ROW))
    finally:
        engine.dispose()


def test_revision_0001_is_the_schema_that_shipped(url, request):
    legacy = url.replace("feedback.db", "legacy.db") if url.startswith("sqlite") else \
        request.getfixturevalue("postgres").create_database()
    make_legacy(legacy)
    engine = engine_of(url)
    try:
        assert migrations.upgrade(engine, migrations.BASELINE) == "0001"
    finally:
        engine.dispose()
    assert schema(url) == schema(legacy)
    assert schema(url)["indexes"]["ix_feedback_model_version"] == (("model_version",), False)


def test_an_empty_database_is_migrated_to_head_on_first_use_and_matches_the_models(url):
    store = FeedbackStore(url, attach=False, clock=lambda: 1_800_000_000.0)
    row_id = store.record(trace_id="tr-1", rating="down", route="gpt", model_version="2")
    assert [(r.id, r.rating, r.model_version) for r in store.ratings()] == [(row_id, "down", "2")]
    assert revision(url) == [HEAD]
    indexes = schema(url)["indexes"]
    assert indexes["ix_feedback_version_created"] == (("model_version", "created_ts"), False)
    assert "ix_feedback_model_version" not in indexes
    with store.engine.connect() as conn:  # the models in feedback.py are the head revision, nothing more or less
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    # the adaptation's read works on this backend: version filter, window, blocked answers left out
    store.record(trace_id=None, rating="down", route="blocked", model_version="2")
    store.record(trace_id=None, rating="up", route="gpt", model_version="1")
    rule = AdaptationRule(base_bias=0.3, default_hint="d", half_life_s=86400.0)
    assert rule.window(store, now=1_800_000_000.0, model_version="2") == [(1_800_000_000.0, "down")]
    assert rule.compute(store, now=1_800_000_000.0, model_version="2").bias_towards_35 == pytest.approx(0.4)
    store.dispose()


def test_a_database_from_before_migrations_is_stamped_upgraded_and_keeps_its_rows(url):
    make_legacy(url)
    store = FeedbackStore(url, attach=False)
    (row,) = store.ratings()
    assert (row.trace_id, row.rating, row.comment, row.model_version) == ("tr-legacy", "down",
                                                                          "from the old schema", "1")
    assert revision(url) == [HEAD]
    assert "ix_feedback_version_created" in schema(url)["indexes"]
    store.record(trace_id=None, rating="up", model_version="1")
    assert [r.rating for r in store.ratings(model_version="1")] == ["down", "up"]
    store.dispose()


def test_db_upgrade_and_db_current_on_the_command_line_twice(url, monkeypatch):
    make_legacy(url)
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", url)
    runner = CliRunner()
    out = runner.invoke(main, ["db", "current"])
    assert out.exit_code == 1 and "created before migrations (no alembic_version)" in out.output
    out = runner.invoke(main, ["db", "upgrade"])
    assert out.exit_code == 0, out.output
    assert f"upgraded from an empty database to {HEAD} (stamped 0001 first" in out.output
    out = runner.invoke(main, ["db", "upgrade"])  # idempotent
    assert out.exit_code == 0 and f"already at revision {HEAD} (head)" in out.output
    out = runner.invoke(main, ["db", "current"])
    assert out.exit_code == 0 and f"at revision {HEAD} (head)" in out.output
    assert revision(url) == [HEAD]
    assert [r.trace_id for r in FeedbackStore(url).ratings()] == ["tr-legacy"]


def test_db_upgrade_step_by_step_and_clear_errors(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'steps.db'}"
    runner = CliRunner()
    out = runner.invoke(main, ["db", "current", "--url", url])
    assert out.exit_code == 1 and "no database file yet" in out.output
    out = runner.invoke(main, ["db", "upgrade", "--url", url, "--revision", "0001"])
    assert out.exit_code == 0 and "upgraded from an empty database to 0001" in out.output
    out = runner.invoke(main, ["db", "current", "--url", url])
    assert out.exit_code == 1 and f"at revision 0001; head is {HEAD}: run `llmops-chatbot db upgrade`" in out.output
    out = runner.invoke(main, ["db", "upgrade", "--url", url, "--revision", "9999"])
    assert out.exit_code == 1 and "cannot upgrade" in out.output and "9999" in out.output
    out = runner.invoke(main, ["db", "upgrade", "--url", url])
    assert out.exit_code == 0 and f"upgraded from 0001 to {HEAD}" in out.output
    out = runner.invoke(main, ["db", "upgrade", "--url", "not a url"])
    assert out.exit_code == 1 and "is not a SQLAlchemy URL" in out.output


START_AND_RECORD = """
    import os, sys, time
    from pathlib import Path
    from chatbot_model.store.feedback import FeedbackStore
    url, go, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    Path(go.parent / f"ready-{me}").touch()
    while not go.exists():  # a barrier: every process connects at once
        time.sleep(0.005)
    FeedbackStore(url, attach=False).record(trace_id=f"tr-{me}", rating="up", model_version=me)
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["empty", "before-migrations"])
def test_several_processes_starting_at_once_migrate_once(url, legacy, tmp_path):
    if legacy:
        make_legacy(url)
    n = 4
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(START_AND_RECORD), url,
                               str(tmp_path / "go"), str(i)], stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for i in range(n)]
    wait_until(lambda: len(list(tmp_path.glob("ready-*"))) >= n or any(p.poll() is not None for p in procs),
               "every process to start", 120)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    assert revision(url) == [HEAD]
    rows = FeedbackStore(url).ratings()
    assert sorted(r.trace_id for r in rows) == sorted([f"tr-{i}" for i in range(n)] + (["tr-legacy"] if legacy else []))
