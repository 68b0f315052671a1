"""The feedback table as it shipped before migrations (created then by `metadata.create_all`).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("session_id", sa.String(64)),
        sa.Column("route", sa.String(32)),
        sa.Column("provider", sa.String(32)),
        sa.Column("model", sa.String(128)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("rating", sa.String(4), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("synced_at", sa.DateTime),
        sa.Column("assessment_id", sa.String(64)),
        sa.Column("sync_attempts", sa.Integer, nullable=False),
        sa.Column("sync_error", sa.Text),
        sa.Column("claimed_at", sa.Float),
        sa.Column("attempted_at", sa.Float),
    )
    for column in ("created_ts", "trace_id", "model_version", "synced_at"):
        op.create_index(f"ix_feedback_{column}", "feedback", [column])


def downgrade() -> None:
    op.drop_table("feedback")
