"""Doorbell claims: one attempt at a time, and every attempt counted.

A worker claims a doorbell (``claimed_by``, ``claimed_until``) before running
its work; ``abandoned`` says whether the claim it replaced was never released;
``retries`` is how many attempts at that work have failed.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_outbox") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("abandoned", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("workflow_outbox") as batch:
        batch.drop_column("abandoned")
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("retries")
