"""Helpers of the tests of writing in a caller's transaction (their ``broker`` and ``wf`` fixtures are in conftest)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from workflow_celery import SQLStore


def order_id() -> str:
    return f"order-{uuid.uuid4().hex[:8]}"


def app_orders(store: SQLStore, oid: str) -> int:
    """Rows of the caller's table ``app_orders`` with id ``oid`` on the store's own connection: committed ones."""
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM app_orders WHERE id = :id"), {"id": oid}).scalar_one())
