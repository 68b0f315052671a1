"""/chat's conversation helpers: which history goes with a question, and storing the answered turn.

- An explicit `history` in the request wins: it is validated and must fit the budget (422 naming `history`
  otherwise); the stored conversation of `session_id`, if any, is not read then.
- Otherwise a `session_id` continues the conversation the store holds for it (written by any replica), its
  newest turns within CHATBOT_HISTORY_MAX_MESSAGES / _CHARS.
- After the answer, a request with a `session_id` stores its turn (question, standalone question, answer,
  sources, trace id, model version) in one transaction. A failed request stores nothing.

- `recent_turns` reads a conversation back for `POST /conversation` (the chat page redraws it after a reload):
  its newest turns, as many as CHATBOT_HISTORY_MAX_MESSAGES holds messages.

Without a conversation store (CHATBOT_FEEDBACK_DB_URL empty) a session id only groups ratings, as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool

from chatbot_model.config import Settings
from chatbot_model.contract import check_history
from chatbot_model.server.deps import settings_of
from chatbot_model.server.errors import ConversationUnavailable
from chatbot_model.server.state import ServedTrace

log = logging.getLogger(__name__)


def conversation_store(app) -> Any:
    """The app's conversation store, sharing the feedback store's database (None when none is configured)."""
    from chatbot_model.store.conversations import ConversationStore  # deferred: loads sqlalchemy

    state = app.state
    if getattr(state, "conversation_store", None) is None:
        settings = settings_of(app)
        if not settings.feedback_db_url:
            return None
        feedback = getattr(state, "feedback_store", None)
        database = getattr(feedback, "database", None)  # one engine per database (None: not opened yet)
        state.conversation_store = ConversationStore.from_settings(settings, database=database)
    return state.conversation_store


async def history_for(app, settings: Settings, session_id: str | None, history: list | None) -> list[dict]:
    """The history that goes with this request's question ([] when none)."""
    if history is not None:
        return check_history([m if isinstance(m, dict) else m.model_dump() for m in history], settings)
    if not session_id:
        return []
    try:
        store = conversation_store(app)
        if store is None:
            return []
        return await run_in_threadpool(store.history, session_id, settings.history_max_messages,
                                       settings.history_max_chars)
    except Exception as exc:  # noqa: BLE001 - the database is down: say so, do not answer without the context
        log.warning("conversation %r: history not readable: %s", session_id, type(exc).__name__)
        raise ConversationUnavailable(f"cannot read the conversation of session {session_id!r} now "
                                      f"({type(exc).__name__}); retry shortly, or send the history explicitly") \
            from None


def shown_turns(settings: Settings) -> int:
    """How many of a conversation's newest turns are read back: a question and its answer are two of the
    CHATBOT_HISTORY_MAX_MESSAGES messages that go with the next question (rounded up)."""
    return (settings.history_max_messages + 1) // 2


async def recent_turns(app, settings: Settings, session_id: str) -> list | None:
    """The newest `shown_turns` stored turns of `session_id`, oldest first (`store.conversations.Turn`); None
    when none is stored (pruned, never stored, or no conversation store). 503 when the store cannot be read."""
    shown = shown_turns(settings)
    try:
        store = conversation_store(app)
        turns = [] if store is None else await run_in_threadpool(store.turns, session_id, max(shown, 1))
    except Exception as exc:  # noqa: BLE001 - the database is down: say so
        log.warning("conversation turns not readable: %s", type(exc).__name__)
        raise ConversationUnavailable(f"cannot read the conversation now ({type(exc).__name__}); retry shortly") \
            from None
    if not turns:
        return None
    return turns[len(turns) - shown:] if shown else []


async def store_turn(app, session_id: str | None, row: dict, model_version: str | None) -> int | None:
    """Store the answered turn of `session_id`; returns its turn number (None when nothing was stored)."""
    return await run_in_threadpool(store_turn_now, app, session_id, row, model_version)


def store_turn_now(app, session_id: str | None, row: dict, model_version: str | None) -> int | None:
    """`store_turn` in the calling thread (a streamed answer stores its turn as its final event is sent)."""
    if not session_id or row.get("error"):
        return None
    try:
        store = conversation_store(app)
        if store is None:
            return None
        return store.append_row(session_id, row, model_version)
    except Exception as exc:  # noqa: BLE001 - the answer is given; the turn is missing from the history
        log.warning("conversation %r: turn of trace %r not stored: %s", session_id, row.get("trace_id"),
                    type(exc).__name__)
        return None


async def served_turn(app, trace_id: str, timeout_s: float) -> tuple[Any, str | None]:
    """(the ServedTrace of the stored turn that answered with `trace_id` on any replica, or None; why the store
    could not say, or None). No store configured: (None, None)."""

    try:
        store = conversation_store(app)
        if store is None:
            return None, None
        turn = await asyncio.wait_for(run_in_threadpool(store.find_trace, trace_id), timeout_s)
    except asyncio.TimeoutError:
        return None, f"the conversation store did not answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - unreachable or erroring database: it cannot say
        return None, f"the conversation store failed ({type(exc).__name__})"
    if turn is None:
        return None, None
    return ServedTrace(trace_id=trace_id, route="blocked" if turn.blocked else turn.route, provider=turn.provider,
                       model=turn.model, session_id=turn.session_id, model_version=turn.model_version), None


def record_answer(row: dict, session_id: str | None, backend, traces, metrics, app=None) -> None:
    """What the server keeps of an answer it gave, for /chat, its stream and /v1 alike: metrics, the served trace
    for /feedback and, with `app`, the conversation's turn (a stream stores it before its final event goes out,
    so a follow-up sees it). Blocking: run it in a worker thread."""
    version = row.get("model_version") or getattr(backend, "version", None)
    metrics.observe_answer(row)
    if app is not None:
        store_turn_now(app, session_id, row, version)
    traces.remember(ServedTrace(trace_id=row["trace_id"], route=row["route"], provider=row["provider"],
                                model=row["model"], session_id=session_id, model_version=version))
    log.info("trace=%r route=%r provider=%r blocked=%s latency_ms=%.0f", row["trace_id"], row["route"], row["provider"],
             row["blocked"], row["latency_ms"])
