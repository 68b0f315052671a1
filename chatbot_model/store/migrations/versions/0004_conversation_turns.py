"""Conversation turns: one row per answered question of a session, in the feedback database.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("standalone_question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("route", sa.String(32)),
        sa.Column("provider", sa.String(32)),
        sa.Column("model", sa.String(128)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("blocked", sa.Boolean, nullable=False),
        sa.Column("abstained", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.UniqueConstraint("session_id", "turn", name="uq_conversation_turns_session_turn"),
    )
    op.create_index("ix_conversation_turns_trace_id", "conversation_turns", ["trace_id"])
    op.create_index("ix_conversation_turns_created_ts", "conversation_turns", ["created_ts"])


def downgrade() -> None:
    op.drop_index("ix_conversation_turns_created_ts", table_name="conversation_turns")
    op.drop_index("ix_conversation_turns_trace_id", table_name="conversation_turns")
    op.drop_table("conversation_turns")
