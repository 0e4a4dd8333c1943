"""Initial tables: records, history, outbox, step and hook error counters.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Written by hand and frozen: never edit it, add a revision instead. The values
in the partial index are ``RunState`` INITIATED, RUNNING and PAUSED.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IN_PROGRESS = "run_state IN (1, 2, 3)"


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_records",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("workflow_name", sa.Text(), nullable=False),
        sa.Column("foreign_id", sa.Text(), nullable=False),
        sa.Column("run_state", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_state_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("status_description", sa.Text(), nullable=False, server_default=""),
        sa.Column("trace_origin", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("run_id", name="pk_workflow_records"),
    )
    op.create_index("ix_workflow_records_foreign_id", "workflow_records", ["workflow_name", "foreign_id", "created_at"])
    op.create_index("ix_workflow_records_status", "workflow_records", ["workflow_name", "status"])
    op.create_index("ix_workflow_records_run_state", "workflow_records", ["workflow_name", "run_state"])
    op.create_index("ix_workflow_records_created_at", "workflow_records", ["created_at"])
    op.create_index(
        "uq_workflow_records_in_progress",
        "workflow_records",
        ["workflow_name", "foreign_id"],
        unique=True,
        postgresql_where=sa.text(_IN_PROGRESS),
        sqlite_where=sa.text(_IN_PROGRESS),
    )

    op.create_table(
        "workflow_history",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("run_state", sa.Integer(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "version", name="pk_workflow_history"),
    )

    op.create_table(
        "workflow_outbox",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("workflow_name", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("due_at", _ts(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_outbox"),
    )
    op.create_index("ix_workflow_outbox_due_at", "workflow_outbox", ["due_at"])
    op.create_index("ix_workflow_outbox_run_id", "workflow_outbox", ["run_id"])

    op.create_table(
        "workflow_step_errors",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "status", name="pk_workflow_step_errors"),
    )

    op.create_table(
        "workflow_hook_errors",
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("hook", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_workflow_hook_errors"),
    )
    op.create_index("ix_workflow_hook_errors_run_id", "workflow_hook_errors", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_workflow_hook_errors_run_id", table_name="workflow_hook_errors")
    op.drop_table("workflow_hook_errors")
    op.drop_table("workflow_step_errors")
    op.drop_index("ix_workflow_outbox_run_id", table_name="workflow_outbox")
    op.drop_index("ix_workflow_outbox_due_at", table_name="workflow_outbox")
    op.drop_table("workflow_outbox")
    op.drop_table("workflow_history")
    op.drop_index("uq_workflow_records_in_progress", table_name="workflow_records")
    op.drop_index("ix_workflow_records_created_at", table_name="workflow_records")
    op.drop_index("ix_workflow_records_run_state", table_name="workflow_records")
    op.drop_index("ix_workflow_records_status", table_name="workflow_records")
    op.drop_index("ix_workflow_records_foreign_id", table_name="workflow_records")
    op.drop_table("workflow_records")
