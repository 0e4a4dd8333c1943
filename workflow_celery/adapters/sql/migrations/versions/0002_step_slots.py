"""Step slots: how ``parallel_count`` limits concurrent executions of a step.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_step_slots",
        sa.Column("workflow_name", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_name", "status", "slot", name="pk_workflow_step_slots"),
    )
    op.create_index("ix_workflow_step_slots_holder", "workflow_step_slots", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_workflow_step_slots_holder", table_name="workflow_step_slots")
    op.drop_table("workflow_step_slots")
