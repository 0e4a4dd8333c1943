"""Acceptance: a run triggered in the application's own SQLAlchemy session, on a real worker and broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import Worker
from tests.acceptance.helpers import wait_all_finished
from workflow_celery import RecordNotFound, RunState, SQLStore, Workflow


def test_committed_runs_complete_and_rolled_back_ones_never_exist(
    orders: Workflow[Order, OrderStatus], store: SQLStore, start_worker: Callable[..., Worker]
) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE shop_orders (id text PRIMARY KEY)"))
    start_worker("examples.orders", "order-processing.*", concurrency=1)
    committed: list[str] = []
    rolled_back: list[str] = []
    for i in range(20):
        oid = f"order-{i}"
        keep = i % 2 == 0
        try:
            with Session(store.engine) as session, session.begin(), store.joined(session):
                session.execute(sa.text("INSERT INTO shop_orders (id) VALUES (:id)"), {"id": oid})
                run_id = orders.trigger(oid, initial_value=Order(id=oid, items=["book"], total=12.5))
                (committed if keep else rolled_back).append(run_id)
                if not keep:
                    raise RuntimeError("the view failed after triggering")
        except RuntimeError:
            pass
    wait_all_finished(orders, committed, timeout=120)
    for run_id in committed:
        assert store.lookup(run_id).run_state is RunState.COMPLETED
        path = [OrderStatus(h.status) for h in store.history(run_id)]
        assert path == [OrderStatus.CREATED, OrderStatus.VALIDATED, OrderStatus.PAID, OrderStatus.FULFILLED]
    for run_id in rolled_back:
        with pytest.raises(RecordNotFound):
            store.lookup(run_id)
        assert store.outbox(run_id) == []
    with store.engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM shop_orders ORDER BY id")).scalars().all()
    assert sorted(ids) == sorted(f"order-{i}" for i in range(0, 20, 2))
