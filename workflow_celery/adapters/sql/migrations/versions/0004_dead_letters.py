"""Dead letters: messages a worker could not hand to any task, kept as they arrived.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_dead_letters",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False, server_default=""),
        sa.Column("content_encoding", sa.Text(), nullable=False, server_default=""),
        sa.Column("headers", sa.Text(), nullable=False, server_default=""),
        sa.Column("worker", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_dead_letters"),
    )
    op.create_index("ix_workflow_dead_letters_received_at", "workflow_dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_workflow_dead_letters_received_at", table_name="workflow_dead_letters")
    op.drop_table("workflow_dead_letters")
