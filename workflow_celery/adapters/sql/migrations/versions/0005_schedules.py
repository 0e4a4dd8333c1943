"""Schedules and what became of their slots.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_schedules",
        sa.Column("workflow_name", sa.Text(), nullable=False),
        sa.Column("foreign_id", sa.Text(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.Text(), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("initial_value", sa.Text(), nullable=True),
        sa.Column("filter", sa.Text(), nullable=False, server_default=""),
        sa.Column("next_slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(16), nullable=False, server_default=""),
        sa.Column("last_run_id", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("workflow_name", "foreign_id", name="pk_workflow_schedules"),
    )
    op.create_index("ix_workflow_schedules_next_slot", "workflow_schedules", ["workflow_name", "next_slot"])
    op.create_table(
        "workflow_schedule_slots",
        sa.Column("workflow_name", sa.Text(), nullable=False),
        sa.Column("foreign_id", sa.Text(), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_name", "foreign_id", "slot_at", name="pk_workflow_schedule_slots"),
    )


def downgrade() -> None:
    op.drop_table("workflow_schedule_slots")
    op.drop_index("ix_workflow_schedules_next_slot", table_name="workflow_schedules")
    op.drop_table("workflow_schedules")
