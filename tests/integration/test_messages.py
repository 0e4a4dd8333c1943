"""What actually goes through Redis: JSON with identifiers only, on a queue per status."""

from __future__ import annotations

import base64
import json

import redis

from examples.order_processing import Order, OrderStatus, order_workflow
from tests.acceptance.helpers import client_app
from workflow_celery import SQLStore


def test_a_trigger_publishes_ids_only_as_json_on_the_status_queue(broker_url: str, store: SQLStore) -> None:
    wf = order_workflow().build(client_app(broker_url), store)
    secret = "4111-1111-1111-1111"
    run_id = wf.trigger("o-1", initial_value=Order(id="o-1", items=[secret], total=3.0))
    client = redis.Redis.from_url(broker_url)
    raw = client.lrange("order-processing.created", 0, -1)
    assert len(raw) == 1
    envelope = json.loads(raw[0])
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == "order-processing.created"
    body = json.loads(base64.b64decode(envelope["body"]))
    args, kwargs, _ = body
    assert args == []
    assert kwargs == {
        "workflow": "order-processing",
        "run_id": run_id,
        "foreign_id": "o-1",
        "status": int(OrderStatus.CREATED),
        "version": 1,
        "attempt": 1,
    }
    # What Flower shows: the task of the first attempt, with the step and the run named.
    headers = envelope["headers"]
    assert headers["id"] == f"{run_id}.1-attempt-1" and headers["retries"] == 0
    assert headers["kwargsrepr"] == repr(
        {
            "workflow": "order-processing",
            "step": "CREATED validate",
            "foreign_id": "o-1",
            "run_id": run_id,
            "version": 1,
            "attempt": 1,
        }
    )
    assert secret.encode() not in raw[0] and secret.encode() not in base64.b64decode(envelope["body"])
    # nothing else was published: no result backend traffic, no other queue
    assert sorted(k.decode() if isinstance(k, bytes) else k for k in client.keys("order-processing*")) == [
        "order-processing.created"
    ]


def test_relay_republishes_a_lost_message(broker_url: str, store: SQLStore) -> None:
    from datetime import timedelta

    wf = order_workflow().build(client_app(broker_url), store, redeliver_after=timedelta(seconds=1))
    run_id = wf.trigger("o-2", initial_value=Order(id="o-2", items=["a"], total=1.0))
    client = redis.Redis.from_url(broker_url)
    client.delete("order-processing.created")  # the broker lost it
    assert wf.relay_once() == 0
    import time

    time.sleep(1.1)
    assert wf.relay_once() == 1
    [raw] = client.lrange("order-processing.created", 0, -1)
    assert run_id.encode() in base64.b64decode(json.loads(raw)["body"])
    [row] = store.outbox(run_id)
    assert row.attempts == 1  # and it will ring again later unless a worker answers
