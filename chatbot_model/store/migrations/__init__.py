"""Schema migrations of the feedback database (Alembic), run from code: no alembic.ini.

`upgrade(engine)` brings a database to the newest revision; `store.db.Database` calls it when it connects and
`llmops-chatbot db upgrade` runs it by hand. Revision 0001 is the table as it shipped before migrations: a
database created then (a `feedback` table, no `alembic_version`) is stamped 0001 and upgraded from there.

Several processes may start at once. The upgrade runs in one transaction that holds a lock, so one process
migrates and the others wait, then find the database at head: SQLite takes the database's write lock first
(`BEGIN EXCLUSIVE`; its DDL is transactional), PostgreSQL a transaction-level advisory lock. Other databases
retry when they lose the race. A database already at head costs one SELECT, no lock.

A new revision: a file in `versions/` with `revision = "000N"` and `down_revision` the previous one (the
`script.py.mako` template); keep `store.tables.metadata` equal to the head (tests compare them).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BASELINE = "0001"          # the schema that shipped before migrations
TABLE = "feedback"
VERSION_TABLE = "alembic_version"
PG_LOCK_KEY = 0x6C6C6D6F70  # pg_advisory_xact_lock key of these migrations ("llmop")


def config(connection: Connection | None = None):
    """An Alembic `Config` for the shipped scripts; `connection` is the one env.py migrates."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """The newest revision shipped."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


@dataclass(frozen=True)
class Status:
    """Where a database stands: its revision (None: no `alembic_version`) and whether it has the table."""

    revision: str | None
    has_table: bool

    @property
    def at_head(self) -> bool:
        return self.revision == head()

    def describe(self) -> str:
        if self.revision is None:
            return (f"created before migrations (no {VERSION_TABLE}): `llmops-chatbot db upgrade` stamps it "
                    f"{BASELINE} and upgrades it to {head()}" if self.has_table else
                    f"empty: `llmops-chatbot db upgrade` creates the schema at {head()}")
        if self.at_head:
            return f"at revision {self.revision} (head)"
        return f"at revision {self.revision}; head is {head()}: run `llmops-chatbot db upgrade`"


def status(conn: Connection) -> Status:
    """The revision of the database behind `conn` (read only)."""
    from alembic.runtime.migration import MigrationContext

    tables = set(inspect(conn).get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if VERSION_TABLE in tables else None
    return Status(revision=revision, has_table=TABLE in tables)


def upgrade(engine: Engine, target: str = "head") -> str:
    """Bring the database of `engine` to `target` (default: head); returns the revision it is at."""
    if target == "head":
        with engine.connect() as conn:
            if status(conn).at_head:
                return head()
    backend = engine.url.get_backend_name()
    if backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return _upgrade_sqlite_file(engine, target)
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                if backend == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
                return _upgrade(conn, target)
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            # another process created the same table or version row first (no lock on this backend)
            if attempt == 4 or not any(s in str(exc).lower() for s in ("already exists", "duplicate", "unique")):
                raise
            log.info("lost a migration race (%s); retrying", exc.orig)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _upgrade(conn: Connection, target: str) -> str:
    """Stamp a pre-migration database at the baseline, then upgrade; in the caller's transaction."""
    from alembic import command

    cfg = config(conn)
    found = status(conn)
    if found.revision is None and found.has_table:
        log.info("feedback database created before migrations: stamping it %s", BASELINE)
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, target)
    now = status(conn).revision
    if now != found.revision:
        log.info("feedback database upgraded from %s to %s", found.revision or "nothing", now)
    return now


def _upgrade_sqlite_file(engine: Engine, target: str) -> str:
    """SQLite: the whole upgrade in one `BEGIN EXCLUSIVE` transaction on a connection of its own.

    pysqlite neither begins a transaction before DDL nor lets one be chosen; with its own transaction handling
    off (`isolation_level=None`), SQLAlchemy's begin emits the BEGIN (the SQLAlchemy documentation's recipe).
    """
    locked = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 60, "isolation_level": None})

    @event.listens_for(locked, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA busy_timeout=60000")

    @event.listens_for(locked, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN EXCLUSIVE")

    try:
        with locked.begin() as conn:
            return _upgrade(conn, target)
    finally:
        locked.dispose()


__all__ = ["BASELINE", "Status", "config", "head", "status", "upgrade"]
