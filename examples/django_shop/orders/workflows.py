"""The order workflow: charge the order, then ship it. Built on the project's Celery app and Django's database."""

import enum
from dataclasses import dataclass, field

from shop.celery import app

from workflow_celery import Builder, Run
from workflow_celery.contrib.django import DjangoStore


class OrderStatus(enum.IntEnum):
    UNKNOWN = 0
    CREATED = 1
    PAID = 2
    SHIPPED = 3


@dataclass
class Order:
    id: str = ""
    skus: list[str] = field(default_factory=list)
    total: float = 0.0
    charge_id: str | None = None
    tracking_number: str | None = None


def charge(run: Run[Order, OrderStatus]) -> OrderStatus:
    # A real shop calls its payment provider here with run.run_id as the idempotency key.
    run.object.charge_id = f"ch_{run.run_id[:12]}"
    return OrderStatus.PAID


def ship(run: Run[Order, OrderStatus]) -> OrderStatus:
    run.object.tracking_number = f"TRK-{run.foreign_id}"
    return OrderStatus.SHIPPED


builder = Builder("shop-orders", Order, OrderStatus)
builder.add_step(OrderStatus.CREATED, charge, OrderStatus.PAID)
builder.add_step(OrderStatus.PAID, ship, OrderStatus.SHIPPED)
wf = builder.build(app, DjangoStore())
