"""The order workflow: created -> validated -> paid -> fulfilled (or rejected), with its three hooks.

Only the definition lives here; ``examples.orders`` binds it to Celery and
PostgreSQL, ``examples.demo`` to SQLite and the in-process broker.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from examples.notifications import Notifications
from workflow_celery import Builder, Run, TypedRecord

log = logging.getLogger(__name__)


class OrderStatus(enum.IntEnum):
    UNKNOWN = 0  # 0 is reserved: never a node of the graph
    CREATED = 1
    VALIDATED = 2
    PAID = 3
    FULFILLED = 4
    REJECTED = 5


@dataclass
class Order:
    id: str = ""
    items: list[str] = field(default_factory=list)
    total: float = 0.0
    charge_id: str | None = None
    tracking_number: str | None = None


def validate(run: Run[Order, OrderStatus]) -> OrderStatus:
    if not run.object.items or run.object.total <= 0:
        return OrderStatus.REJECTED
    return OrderStatus.VALIDATED


def pay(run: Run[Order, OrderStatus]) -> OrderStatus:
    # The run id is a natural idempotency key for the payment provider:
    # a step may run more than once, its commit happens exactly once.
    run.object.charge_id = f"ch_{run.run_id[:8]}"
    return OrderStatus.PAID


def fulfil(run: Run[Order, OrderStatus]) -> OrderStatus:
    run.object.tracking_number = f"trk_{run.object.id}"
    return OrderStatus.FULFILLED


def order_workflow(notifications: Notifications | None = None) -> Builder[Order, OrderStatus]:
    b = Builder("order-processing", Order, OrderStatus)
    b.add_step(OrderStatus.CREATED, validate, OrderStatus.VALIDATED, OrderStatus.REJECTED)
    b.add_step(OrderStatus.VALIDATED, pay, OrderStatus.PAID)
    b.add_step(OrderStatus.PAID, fulfil, OrderStatus.FULFILLED)
    if notifications is None:
        return b

    @b.on_complete
    def notify_customer(record: TypedRecord[Order, OrderStatus]) -> None:
        if record.status != OrderStatus.FULFILLED:
            return  # rejected orders complete too; nothing to tell the customer here
        detail = f"order {record.object.id} shipped, tracking {record.object.tracking_number}"
        if not notifications.send_once(record.run_id, "confirmation", record.foreign_id, detail):
            log.info("confirmation for run %s was already sent", record.run_id)

    @b.on_cancel
    def release_inventory(record: TypedRecord[Order, OrderStatus]) -> None:
        detail = f"release {', '.join(record.object.items) or 'nothing'}; refund {record.object.charge_id or 'none'}"
        notifications.send_once(record.run_id, "cleanup", record.foreign_id, detail)

    @b.on_pause
    def open_ticket(record: TypedRecord[Order, OrderStatus]) -> None:
        detail = f"order {record.foreign_id} paused at {record.status.name}: {record.meta.run_state_reason}"
        notifications.send_once(record.run_id, "ticket", record.foreign_id, detail)

    return b
