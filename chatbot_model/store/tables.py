"""The database's tables at the newest migration (`store/migrations`; a test keeps the two equal)."""

from __future__ import annotations

from sqlalchemy import (JSON, Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)

from chatbot_model.contract import MAX_ID_CHARS

metadata = MetaData()

feedback_table = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime, nullable=False),            # naive UTC
    Column("created_ts", Float, nullable=False, index=True),   # epoch seconds: the decay reads it
    Column("trace_id", String(MAX_ID_CHARS), index=True),
    Column("session_id", String(MAX_ID_CHARS)),
    Column("route", String(32)),
    Column("provider", String(32)),
    Column("model", String(128)),
    Column("model_version", String(64)),                      # the version that answered
    Column("rating", String(4), nullable=False),
    Column("comment", Text),
    Column("synced_at", DateTime, index=True),                 # NULL = not attached to the trace yet
    Column("assessment_id", String(64)),
    Column("sync_attempts", Integer, nullable=False, default=0),
    Column("sync_error", Text),
    Column("claimed_at", Float),                               # epoch; a sync in progress (lease)
    Column("attempted_at", Float),                             # epoch of the last attach attempt
    Column("orphaned_at", DateTime),                           # the trace never arrived: no more tries
    Index("ix_feedback_version_created", "model_version", "created_ts"),
)

turns_table = Table(
    "conversation_turns", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(MAX_ID_CHARS), nullable=False),
    Column("turn", Integer, nullable=False),                    # 1, 2, ... within the session
    Column("question", Text, nullable=False),                   # what the user asked
    Column("standalone_question", Text, nullable=False),        # what retrieval saw ("" = the question itself)
    Column("answer", Text, nullable=False),
    Column("sources", JSON, nullable=False),                    # [{id, title, source, score}]
    Column("trace_id", String(MAX_ID_CHARS)),
    Column("route", String(32)),                                # what answered: ratings of the turn use it
    Column("provider", String(32)),
    Column("model", String(128)),
    Column("model_version", String(64)),
    Column("blocked", Boolean, nullable=False),
    Column("abstained", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", DateTime, nullable=False),             # naive UTC
    Column("created_ts", Float, nullable=False),                # epoch seconds: retention reads it
    UniqueConstraint("session_id", "turn", name="uq_conversation_turns_session_turn"),
    Index("ix_conversation_turns_trace_id", "trace_id"),
    Index("ix_conversation_turns_created_ts", "created_ts"),
)
