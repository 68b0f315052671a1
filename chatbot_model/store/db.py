"""The one SQL database of the chatbot's own rows (feedback, conversation turns): URL, engine and migrations.

Any SQLAlchemy URL works (`CHATBOT_FEEDBACK_DB_URL`; PostgreSQL in production); the default is a SQLite file.
The schema is brought to the newest migration on first use (`store.migrations`, Alembic; also `llmops-chatbot
db upgrade`). SQLite runs in WAL mode with a busy timeout, so several processes can write at once and none loses
a row. The stores (`store.feedback`, `store.conversations`) sit on one `Database` and never make engines.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import Table, create_engine, delete, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import StaticPool

from chatbot_model.errors import ConfigError
from chatbot_model.store import migrations

log = logging.getLogger(__name__)
_MIGRATING = threading.Lock()  # two Database objects of one process never migrate at once

OPEN_ATTEMPTS = 5  # opening a SQLite database another process is migrating: tries, 0.2 s doubling


def oneline(exc: Exception) -> str:
    """The driver's message of a SQLAlchemy error, on one line."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def delete_older_than(engine: Engine, table: Table, days: float | None, now: float) -> int:
    """Delete the rows of `table` whose `created_ts` is more than `days` before `now` (0 or None: none); how many
    went. Retention of turns and ratings."""
    if not days or days <= 0:
        return 0
    with engine.begin() as conn:
        deleted = conn.execute(delete(table).where(table.c.created_ts < now - days * 86400.0)).rowcount
    return int(deleted or 0)


def _with_driver(url: URL) -> URL:
    """`postgresql://` with the PostgreSQL driver that is installed (SQLAlchemy's default differs by version)."""
    if url.drivername == "postgresql":
        for driver in ("psycopg", "psycopg2"):
            if importlib.util.find_spec(driver) is not None:
                return url.set(drivername=f"postgresql+{driver}")
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Database:
    """A SQLAlchemy URL and its engine, migrated to the newest revision on first use (thread-safe)."""

    def __init__(self, url: str):
        if not url:
            raise ConfigError("the feedback store needs a SQLAlchemy URL; set CHATBOT_FEEDBACK_DB_URL "
                              "(e.g. sqlite:///.chatbot/feedback.db or postgresql://user@host/db)")
        try:
            self._url = make_url(url)
        except Exception:
            raise ConfigError(f"CHATBOT_FEEDBACK_DB_URL {url!r} is not a SQLAlchemy URL; use e.g. "
                              "sqlite:///.chatbot/feedback.db or postgresql://user@host/db") from None
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def masked_url(self) -> str:
        return self._url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        return self._url.get_backend_name()

    @property
    def sqlite_path(self) -> str | None:
        """The file of a SQLite database (None: another backend, in memory, or a `file:` URI)."""
        db = self._url.database if self.backend == "sqlite" else None
        return db if db and db != ":memory:" and not db.startswith("file:") else None

    def __repr__(self) -> str:
        return f"Database({self.masked_url!r})"

    @property
    def engine(self) -> Engine:
        """The engine, with the schema migrated to the newest revision on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._connect()
        return self._engine

    def make_engine(self) -> Engine:
        """A new engine for the URL (SQLite: its directory created, WAL, busy timeout); the schema untouched."""
        sqlite = self.backend == "sqlite"
        kwargs = {}
        if sqlite:
            if self.sqlite_path:
                Path(self.sqlite_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            if not self._url.database or self._url.database == ":memory:":
                kwargs["poolclass"] = StaticPool
        try:
            engine = create_engine(_with_driver(self._url), **kwargs)
        except Exception as exc:  # a missing driver, a bad option
            extra = " (pip install 'llmops-chatbot[postgres]')" if self.backend == "postgresql" else ""
            raise ConfigError(f"cannot open the feedback store {self.masked_url!r}: {exc}; check "
                              f"CHATBOT_FEEDBACK_DB_URL and that its database driver is installed{extra}") from None
        if sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _connect(self) -> Engine:
        engine = self.make_engine()
        try:
            for attempt in range(OPEN_ATTEMPTS):  # safe when several processes start at once (see migrations)
                try:
                    with _MIGRATING:  # Alembic's context is process-global: one migration at a time
                        migrations.upgrade(engine)
                    break
                except OperationalError as exc:  # SQLite can refuse a connection at once while another migrates
                    if attempt == OPEN_ATTEMPTS - 1 or "database is locked" not in str(exc):
                        raise
                    log.info("feedback database busy (another process is migrating it): retrying")
                    time.sleep(0.2 * 2 ** attempt)
        except (OperationalError, ProgrammingError) as exc:
            engine.dispose()
            raise ConfigError(f"cannot open or migrate the feedback database {self.masked_url!r}: {oneline(exc)}; "
                              "check CHATBOT_FEEDBACK_DB_URL and that the database is reachable and writable") from None
        except BaseException:
            engine.dispose()
            raise
        return engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


__all__ = ["Database", "oneline"]
