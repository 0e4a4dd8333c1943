"""Orders arriving from outside through a connector: a Redis stream or a broker queue.

celery -A tests.acceptance.connectorapp worker -Q 'inbound-orders.*'

``WFC_CONNECTOR_SOURCE`` picks the source (``redis``: the stream
``wfc-inbound-orders``; ``kombu``: the queue ``wfc-inbound-orders``) on the
broker at ``CELERY_BROKER_URL``.
"""

from __future__ import annotations

import contextlib
import enum
import os
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery

import celeryconfig
from workflow_celery import Builder, Run, SQLStore, Workflow, WorkflowInProgress
from workflow_celery.connectors import ConnectorEvent, KombuQueueSource, RedisStreamSource

NAME = "wfc-inbound-orders"
CLAIM_AFTER = timedelta(seconds=3)
MAX_ATTEMPTS = 3


class Inbound(enum.IntEnum):
    UNKNOWN = 0
    RECEIVED = 1
    ACCEPTED = 2


@dataclass
class Order:
    event_id: str = ""
    kind: str = ""


def accept(run: Run[Order, Inbound]) -> Inbound:
    return Inbound.ACCEPTED


def start_run(wf: Workflow[Order, Inbound], event: ConnectorEvent) -> None:
    if event.foreign_id == "poison":
        raise ValueError("this order cannot be read")
    # An order already being processed: the event is a duplicate of the sender's.
    with contextlib.suppress(WorkflowInProgress):
        wf.trigger(event.foreign_id, initial_value=Order(event_id=event.id, kind=event.type))


def source() -> RedisStreamSource | KombuQueueSource:
    url = celeryconfig.broker_url
    if os.environ.get("WFC_CONNECTOR_SOURCE", "redis") == "kombu":
        return KombuQueueSource(url, NAME, max_attempts=MAX_ATTEMPTS)
    return RedisStreamSource(url, NAME, claim_after=CLAIM_AFTER, max_attempts=MAX_ATTEMPTS)


def builder() -> Builder[Order, Inbound]:
    b = Builder("inbound-orders", Order, Inbound)
    b.add_step(Inbound.RECEIVED, accept, Inbound.ACCEPTED)
    b.add_connector("orders-in", source(), start_run)
    return b


app = Celery("connectorapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url))
