"""CLI commands of the feedback database's schema: `db upgrade` and `db current` (wired in cli/main.py)."""

from __future__ import annotations

from pathlib import Path

import click

from chatbot_model.errors import ConfigError
from chatbot_model.store import migrations
from chatbot_model.store.db import Database, oneline


def _store(url: str | None):
    from chatbot_model.config import load_settings  # deferred: loads pydantic

    url = url or load_settings().feedback_db_url
    if not url:
        raise ConfigError("no feedback store: set CHATBOT_FEEDBACK_DB_URL (e.g. sqlite:///.chatbot/feedback.db) "
                          "or pass --url")
    return Database(url)


def _name(database) -> str:
    """`feedback database URL` (password hidden)."""
    return f"feedback database {database.masked_url}"


_url_option = click.option("--url", help="SQLAlchemy URL of the database (default: CHATBOT_FEEDBACK_DB_URL).")


@click.group("db")
def db() -> None:
    """Schema migrations of the feedback database (Alembic; every process that opens it also upgrades it)."""


@db.command("upgrade")
@_url_option
@click.option("--revision", default="head", show_default=True, help="Upgrade to this revision.")
def upgrade(url: str | None, revision: str) -> None:
    """Bring the schema to the newest revision (a database from before migrations is stamped 0001 first)."""
    from sqlalchemy.exc import SQLAlchemyError

    store = _store(url)
    engine = store.make_engine()
    try:
        with engine.connect() as conn:
            before = migrations.status(conn)
        after = migrations.upgrade(engine, revision)
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot upgrade {store!r}: {oneline(exc)}; check the URL and "
                          "that the database is reachable and writable") from None
    except Exception as exc:  # alembic: an unknown revision
        if type(exc).__module__.startswith("alembic"):
            raise ConfigError(f"cannot upgrade {store!r} to {revision!r}: {exc}") from None
        raise
    finally:
        engine.dispose()
    if before.revision == after:
        click.echo(f"{_name(store)}: already at revision {after}{' (head)' if after == migrations.head() else ''}")
    else:
        click.echo(f"{_name(store)}: upgraded from {before.revision or 'an empty database'} to {after}"
                   + (" (stamped 0001 first: created before migrations)" if before.revision is None
                      and before.has_table else ""))


@db.command("current")
@_url_option
def current(url: str | None) -> None:
    """Print the schema revision of the database (exit 1 when it is not at head)."""

    from sqlalchemy.exc import SQLAlchemyError

    store = _store(url)
    db_path = store.sqlite_path
    if db_path and not Path(db_path).expanduser().exists():
        click.echo(f"{_name(store)}: no database file yet: `llmops-chatbot db upgrade` creates it at {migrations.head()}")
        raise SystemExit(1)
    engine = store.make_engine()
    try:
        with engine.connect() as conn:
            found = migrations.status(conn)
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot read {store!r}: {oneline(exc)}; check the URL") from None
    finally:
        engine.dispose()
    click.echo(f"{_name(store)}: {found.describe()}")
    if not found.at_head:
        raise SystemExit(1)
