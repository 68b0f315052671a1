"""One index for the adaptation's read: a model version's ratings in a time window.

`(model_version, created_ts)` serves both filters of a per-version read; it replaces the index on
`model_version` alone (its prefix).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_feedback_version_created", "feedback", ["model_version", "created_ts"])
    op.drop_index("ix_feedback_model_version", table_name="feedback")


def downgrade() -> None:
    op.create_index("ix_feedback_model_version", "feedback", ["model_version"])
    op.drop_index("ix_feedback_version_created", table_name="feedback")
