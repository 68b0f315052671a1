"""The conversation store: every answered turn of a session, durable and shared by every replica.

Turns live in the feedback database (`CHATBOT_FEEDBACK_DB_URL`: a SQLite file by default, PostgreSQL by URL),
table `conversation_turns` (`store.tables`, migration 0004), so any replica can continue a conversation another one started,
and can tell whether a trace id was served by any of them (`find_trace`, used by `/feedback`).

- `append` stores one turn in one transaction: the next turn number is taken inside the INSERT itself
  (`INSERT ... SELECT max(turn) + 1`), and the unique (session_id, turn) constraint makes a concurrent writer
  that took the same number retry; a failed insert leaves nothing behind.
- `history(session_id)` is the conversation as messages for the next question: the newest turns, oldest first,
  `{"role": "user", "content": question}` then `{"role": "assistant", "content": answer}`, within
  CHATBOT_HISTORY_MAX_MESSAGES and CHATBOT_HISTORY_MAX_CHARS (`contract.trim_history`). Turns the guardrail
  blocked are left out: a refused question is not context for the next one.
- `prune()` deletes turns older than CHATBOT_CONVERSATION_RETENTION_DAYS (0 keeps them forever);
  `llmops-chatbot conversations prune` runs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from chatbot_model.contract import MAX_ID_CHARS, trim_history
from chatbot_model.errors import InvalidInput
from chatbot_model.store.db import Database, delete_older_than
from chatbot_model.store.tables import turns_table

log = logging.getLogger(__name__)

APPEND_ATTEMPTS = 20    # concurrent writers of one session: retries after losing the race for a turn number

@dataclass(frozen=True)
class Turn:
    """One stored turn (a plain copy of the row)."""

    session_id: str
    turn: int
    question: str
    standalone_question: str
    answer: str
    sources: list[dict]
    trace_id: str | None
    model_version: str | None
    blocked: bool
    abstained: bool
    latency_ms: float
    created_at: datetime
    route: str | None = None
    provider: str | None = None
    model: str | None = None


def validate_session_id(value: Any) -> str:
    """A session id: non-empty text of at most 64 characters (surrounding whitespace stripped)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"session_id must be non-empty text, got {value!r:.40}", field="session_id")
    value = value.strip()
    if len(value) > MAX_ID_CHARS or "\x00" in value:
        raise InvalidInput(f"session_id must be at most {MAX_ID_CHARS} characters without NUL; "
                           f"got {len(value)}", field="session_id")
    return value


class ConversationStore:
    """Conversation turns in the feedback database (the same `Database` as `FeedbackStore`)."""

    def __init__(self, url: str = "", *, clock: Callable[[], float] = time.time, retention_days: float = 0.0,
                 database: Database | None = None):
        self.database = database or Database(url)
        self.clock = clock
        self.retention_days = retention_days

    @classmethod
    def from_settings(cls, settings, database: Database | None = None) -> "ConversationStore | None":
        """The store of CHATBOT_FEEDBACK_DB_URL (None when it is empty: conversations are not kept)."""
        if not settings.feedback_db_url:
            return None
        return cls(settings.feedback_db_url, retention_days=settings.conversation_retention_days,
                   database=database)

    def __repr__(self) -> str:
        return f"ConversationStore({self.database!r})"

    @property
    def engine(self) -> Engine:
        return self.database.engine

    # ------------------------------------------------------------ writing
    def append(self, session_id: str, *, question: str, answer: str, standalone_question: str = "",
               sources: list[dict] | None = None, trace_id: str | None = None, model_version: str | None = None,
               blocked: bool = False, abstained: bool = False, latency_ms: float = 0.0, route: str | None = None,
               provider: str | None = None, model: str | None = None) -> int:
        """Store one turn in one transaction; returns its turn number (1 for the first turn of a session)."""
        session_id = validate_session_id(session_id)
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("a stored turn needs its question (non-empty text)", field="question")
        latency = float(latency_ms or 0.0)
        now = self.clock()
        values = dict(session_id=session_id, question=question, standalone_question=standalone_question or "",
                      answer=answer or "", sources=[dict(s) for s in sources or []], trace_id=trace_id or None,
                      model_version=None if model_version in (None, "") else str(model_version),
                      route=(route or None) and str(route)[:32], provider=(provider or None) and str(provider)[:32],
                      model=(model or None) and str(model)[:128], blocked=bool(blocked), abstained=bool(abstained),
                      latency_ms=latency if math.isfinite(latency) else 0.0,
                      created_at=datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None), created_ts=now)
        t = turns_table
        next_turn = (select(func.coalesce(func.max(t.c.turn), 0) + 1).where(t.c.session_id == session_id)
                     .scalar_subquery())
        names = list(values)
        insert = t.insert().from_select(
            [*names, "turn"], select(*[literal(values[n], t.c[n].type) for n in names], next_turn)
        ).returning(t.c.turn)
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    turn = conn.execute(insert).scalar_one()
                log.info("session turn stored: trace %s, turn %d", trace_id, turn)
                return int(turn)
            except IntegrityError:  # another writer took this turn number first: take the next one
                if attempt == APPEND_ATTEMPTS:
                    raise
            except OperationalError as exc:  # SQLite: a writer that could not get the lock in time
                if "locked" not in str(exc).lower() or attempt == APPEND_ATTEMPTS:
                    raise
            time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    def append_row(self, session_id: str, row: dict, model_version: str | None = None) -> int:
        """Store the turn of an answer row (`contract.AnswerRow` as a dict)."""
        return self.append(session_id, question=row["question"], answer=row.get("answer", ""),
                           standalone_question=row.get("standalone_question", ""), sources=row.get("sources"),
                           trace_id=row.get("trace_id"), model_version=model_version or row.get("model_version"),
                           blocked=row.get("blocked", False), abstained=row.get("abstained", False),
                           latency_ms=row.get("latency_ms", 0.0), route=row.get("route"),
                           provider=row.get("provider"), model=row.get("model"))

    def prune(self, older_than_days: float | None = None) -> int:
        """Delete turns older than `older_than_days` (default: the retention setting; 0 = keep everything);
        returns how many were deleted."""
        days = self.retention_days if older_than_days is None else older_than_days
        deleted = delete_older_than(self.engine, turns_table, days, self.clock())
        if deleted:
            log.info("pruned %d conversation turns older than %g days", deleted, days)
        return deleted

    # ------------------------------------------------------------ reading
    def turns(self, session_id: str, last: int | None = None) -> list[Turn]:
        """The session's turns, oldest first (only the `last` ones when given)."""
        t = turns_table
        query = select(t).where(t.c.session_id == validate_session_id(session_id)).order_by(t.c.turn.desc())
        if last is not None:
            query = query.limit(max(0, int(last)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_turn(r) for r in reversed(rows)]

    def history(self, session_id: str, max_messages: int, max_chars: int) -> list[dict[str, str]]:
        """The conversation as messages for the next question, newest within both budgets, oldest first."""
        if max_messages <= 0:
            return []
        messages = []
        for turn in self.turns(session_id, last=max_messages):
            if turn.blocked or not turn.answer:
                continue
            messages += [{"role": "user", "content": turn.question},
                         {"role": "assistant", "content": turn.answer}]
        return trim_history(messages, max_messages, max_chars)

    def find_trace(self, trace_id: str) -> Turn | None:
        """The turn that answered with `trace_id` on any replica; None when no replica stored one. Raises
        when the database cannot be read."""
        with self.engine.connect() as conn:
            row = conn.execute(select(turns_table).where(turns_table.c.trace_id == trace_id)
                               .limit(1)).mappings().first()
        return _turn(row) if row is not None else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(turns_table)).scalar_one())

    def dispose(self) -> None:
        self.database.dispose()


def _turn(r) -> Turn:
    return Turn(session_id=r["session_id"], turn=r["turn"], question=r["question"],
                standalone_question=r["standalone_question"], answer=r["answer"], sources=list(r["sources"] or []),
                trace_id=r["trace_id"], model_version=r["model_version"], blocked=bool(r["blocked"]),
                abstained=bool(r["abstained"]), latency_ms=float(r["latency_ms"]),
                created_at=r["created_at"].replace(tzinfo=timezone.utc), route=r["route"], provider=r["provider"],
                model=r["model"])


__all__ = ["ConversationStore", "Turn", "validate_session_id"]
