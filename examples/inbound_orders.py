"""Orders placed in another system arrive on a Redis stream; a connector starts a run for each.

    python -m examples.inbound_orders publish 100      # another system adds 100 entries to the stream
    celery -A examples.inbound_orders worker -Q 'inbound-orders.*' --loglevel=INFO
    workflow-celery -A examples.inbound_orders runs list
    workflow-celery -A examples.inbound_orders dead-letters list --queue connector:inbound-orders.shop-stream

The stream ``shop-orders`` lives on the broker's Redis (``CELERY_BROKER_URL``);
the runs in ``WORKFLOW_CELERY_DATABASE_URL``. Every worker consuming the
workflow's queues is one consumer of the stream's group: start several and
they share the entries; kill one and another takes over what it held.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
from dataclasses import dataclass, field

from celery import Celery

import celeryconfig
from workflow_celery import Builder, Run, SQLStore, Workflow, WorkflowInProgress
from workflow_celery.connectors import ConnectorEvent, RedisStreamSource

STREAM = "shop-orders"


class Inbound(enum.IntEnum):
    UNKNOWN = 0
    RECEIVED = 1
    CHECKED = 2
    REJECTED = 3


@dataclass
class InboundOrder:
    order_id: str = ""
    items: list[str] = field(default_factory=list)
    event_id: str = ""


def check(run: Run[InboundOrder, Inbound]) -> Inbound:
    return Inbound.CHECKED if run.object.items else Inbound.REJECTED


def receive(wf: Workflow[InboundOrder, Inbound], event: ConnectorEvent) -> None:
    """The connector's function: one run per order. A bad payload raises: retried, then parked."""
    items = json.loads(event.data)["items"]
    order = InboundOrder(order_id=event.foreign_id, items=list(items), event_id=event.id)
    with contextlib.suppress(WorkflowInProgress):  # the other system sent the same order twice
        wf.trigger(event.foreign_id, initial_value=order)


def inbound_workflow() -> Builder[InboundOrder, Inbound]:
    b = Builder("inbound-orders", InboundOrder, Inbound)
    b.add_step(Inbound.RECEIVED, check, Inbound.CHECKED, Inbound.REJECTED)
    b.add_connector("shop-stream", RedisStreamSource(celeryconfig.broker_url, STREAM), receive)
    return b


app = Celery("inbound_orders")
app.config_from_object("celeryconfig")
wf = inbound_workflow().build(app, SQLStore(celeryconfig.workflow_database_url))


def publish(count: int) -> None:
    """What the other system does: one stream entry per order."""
    import redis

    client = redis.Redis.from_url(celeryconfig.broker_url)
    for i in range(1, count + 1):
        items = [] if i % 10 == 0 else [f"sku-{i}"]
        client.xadd(STREAM, {"foreign_id": f"shop-{i}", "type": "order.placed", "data": json.dumps({"items": items})})
    print(f"added {count} entries to the stream {STREAM}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "publish" or not sys.argv[2].isdigit():
        sys.exit("usage: python -m examples.inbound_orders publish COUNT")
    publish(int(sys.argv[2]))
