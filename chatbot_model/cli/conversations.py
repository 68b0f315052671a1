"""CLI commands of the conversation store: `conversations prune` and `conversations show` (wired in cli/main.py)."""

from __future__ import annotations

import click

from chatbot_model.errors import ConfigError


def _store():
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.store.conversations import ConversationStore  # deferred: loads numpy, pydantic, sqlalchemy

    store = ConversationStore.from_settings(load_settings())
    if store is None:
        raise ConfigError("no conversation store: set CHATBOT_FEEDBACK_DB_URL (e.g. sqlite:///.chatbot/feedback.db)")
    return store


@click.group("conversations")
def conversations() -> None:
    """Stored conversation turns (in the feedback database): show one, prune old ones."""


@conversations.command("prune")
@click.option("--older-than-days", type=click.FloatRange(min=0, min_open=True),
              help="Delete turns older than this (default: CHATBOT_CONVERSATION_RETENTION_DAYS).")
@click.option("--ratings-older-than-days", type=click.FloatRange(min=0, min_open=True),
              help="Delete ratings older than this (default: CHATBOT_FEEDBACK_RETENTION_DAYS).")
def prune(older_than_days: float | None, ratings_older_than_days: float | None) -> None:
    """Delete conversation turns and ratings older than their retention (CHATBOT_CONVERSATION_RETENTION_DAYS,
    CHATBOT_FEEDBACK_RETENTION_DAYS; 0 keeps all). The server also does this every CHATBOT_RETENTION_INTERVAL_S."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.store.feedback import FeedbackStore  # deferred: loads sqlalchemy

    store = _store()
    days = older_than_days if older_than_days is not None else store.retention_days
    if not days:
        click.echo("retention is 0 (keep forever): nothing pruned; pass --older-than-days or set "
                   "CHATBOT_CONVERSATION_RETENTION_DAYS")
    else:
        deleted = store.prune(days)
        click.echo(f"deleted {deleted} conversation turns older than {days:g} days; {store.count()} kept")
    rating_days = (ratings_older_than_days if ratings_older_than_days is not None
                   else load_settings().feedback_retention_days)
    if rating_days:
        ratings = FeedbackStore(database=store.database, attach=False).prune(rating_days)
        click.echo(f"deleted {ratings} ratings older than {rating_days:g} days")


@conversations.command("show")
@click.argument("session_id")
def show(session_id: str) -> None:
    """Print the stored turns of SESSION_ID, oldest first."""
    turns = _store().turns(session_id)
    if not turns:
        raise click.ClickException(f"no turns stored for session {session_id!r}")
    for t in turns:
        click.echo(f"[{t.turn}] {t.created_at:%Y-%m-%d %H:%M:%S} trace={t.trace_id or '-'}")
        click.echo(f"  you> {t.question}")
        if t.standalone_question:
            click.echo(f"      (retrieved as: {t.standalone_question})")
        click.echo(f"  bot> {t.answer}")
