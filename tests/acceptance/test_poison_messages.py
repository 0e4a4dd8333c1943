"""Acceptance: whatever arrives on a workflow queue, the worker keeps it aside and goes on.

Each undeliverable input is put on ``order-processing.created`` before any
worker runs. The worker that starts must stay up, keep the input as a dead
letter and run orders; a worker started after the next copy must start too;
the command lists, shows and discards what was kept. On Redis and RabbitMQ.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.order_processing import Order, OrderStatus
from tests.acceptance.brokers import depth, is_redis, publish, push_raw
from tests.acceptance.conftest import Worker
from tests.acceptance.helpers import wait_all_finished, wait_until
from tests.acceptance.test_cli import cli
from workflow_celery import RunState, SQLStore, Workflow

QUEUE = "order-processing.created"


def a_task(case: str) -> bytes:
    """A task message body (args, kwargs, embed) that says which case it is, so every input's bytes differ."""
    return json.dumps([[], {"case": case}, {}]).encode()


@dataclass(frozen=True)
class Poison:
    """An input no task can be given, how to put it on a queue, and what the dead letter says."""

    name: str
    body: bytes
    reason: str
    content_type: str = "application/json"
    headers: dict[str, Any] = field(default_factory=dict)
    raw: bool = False
    """Pushed as bare bytes (a Redis list item, an AMQP body without properties) rather than as a message."""
    redis_only: bool = False

    def put(self, broker_url: str, queue: str = QUEUE) -> None:
        if self.raw:
            push_raw(broker_url, queue, self.body)
        else:
            publish(broker_url, queue, self.body, content_type=self.content_type, headers=self.headers)


def raw_reason(broker_url: str) -> str:
    # On Redis the bytes are not even an envelope; on RabbitMQ they arrive as a message without headers.
    return "not a message: JSONDecodeError" if is_redis(broker_url) else "not a task message: it has no task header"


RAW = Poison("raw bytes", b"this is not json", reason="", raw=True)
INPUTS = [
    RAW,
    Poison(
        "undecodable body",
        b'\xff{"not": json',
        "the body cannot be decoded: DecodeError",
        headers={"task": QUEUE, "id": "undecodable-1"},
    ),
    Poison(
        "unknown content type",
        b"\x00\x01binary",
        "invalid task message: ContentDisallowed",
        content_type="application/x-unheard-of",
        headers={"task": QUEUE, "id": "unknown-type-1"},
    ),
    Poison("missing headers", a_task("missing headers"), "not a task message: it has no task header"),
    Poison(
        "unknown task name",
        a_task("unknown task name"),
        "unknown task 'order-processing.shipped'",
        headers={"task": "order-processing.shipped", "id": "unknown-task-1"},
    ),
]


def expected_reason(poison: Poison, broker_url: str) -> str:
    return poison.reason or raw_reason(broker_url)


def order(orders: Workflow[Order, OrderStatus], name: str) -> str:
    return orders.trigger(name, initial_value=Order(id=name, items=["a"], total=5.0))


def dead_letter_lines(listing: str) -> list[str]:
    return [line for line in listing.splitlines()[1:] if QUEUE in line]


@pytest.mark.parametrize("poison", INPUTS, ids=[p.name for p in INPUTS])
def test_an_undeliverable_input_is_kept_aside_and_the_worker_goes_on(
    poison: Poison,
    broker_url: str,
    orders: Workflow[Order, OrderStatus],
    start_worker: Callable[..., Worker],
    store: SQLStore,
    pg_database: str,
) -> None:
    reason = expected_reason(poison, broker_url)
    poison.put(broker_url)  # waiting before any worker starts
    first = start_worker("examples.orders", "order-processing.*", concurrency=1)
    wait_until(lambda: store.count_dead_letters() == 1, 30, "the input kept as a dead letter")
    done = order(orders, "after-poison-1")
    wait_all_finished(orders, [done], timeout=60)
    assert orders.lookup(done).run_state == RunState.COMPLETED
    assert first.proc.poll() is None, first.output()
    assert "Unrecoverable error" not in first.output()
    assert f"kept an undeliverable message from queue {QUEUE} as dead letter" in first.output()

    first.stop()
    poison.put(broker_url)
    second = start_worker("examples.orders", "order-processing.*", concurrency=1)
    wait_until(lambda: store.count_dead_letters() == 2, 30, "the second copy kept as a dead letter")
    done = order(orders, "after-poison-2")
    wait_all_finished(orders, [done], timeout=60)
    assert second.proc.poll() is None, second.output()

    letters = store.dead_letters()
    assert [d.body for d in letters] == [poison.body, poison.body]  # the bytes exactly as they arrived
    assert all(d.queue == QUEUE and d.reason.startswith(reason) for d in letters), letters
    assert letters[0].received_at > letters[1].received_at

    listed = cli("-A", "examples.orders", "dead-letters", "list", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    lines = dead_letter_lines(listed.stdout)
    assert len(lines) == 2 and all(reason in line for line in lines), listed.stdout
    assert "(2 dead letters)" in listed.stdout
    newest = letters[0].id
    shown = cli(
        "-A", "examples.orders", "dead-letters", "show", newest[:8], "--json", db=pg_database, broker=broker_url
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == newest
    discarded = cli("-A", "examples.orders", "dead-letters", "discard", newest, db=pg_database, broker=broker_url)
    assert (discarded.returncode, discarded.stdout.strip()) == (0, "discarded 1 dead letter"), discarded.stderr
    assert [d.id for d in store.dead_letters()] == [letters[1].id]


# Everything else that is not a message a task can be given, all at once.
MORE = [
    Poison("JSON, not an envelope", b'"just a string"', "not a message: TypeError", raw=True, redis_only=True),
    Poison("an empty envelope", b"{}", "not a message: KeyError: 'properties'", raw=True, redis_only=True),
    Poison(
        "an envelope without delivery info",
        json.dumps({"body": "", "properties": {"delivery_tag": "x"}}).encode(),
        "not a message: KeyError: 'exchange'",
        raw=True,
        redis_only=True,
    ),
    Poison(
        "a body that is not base64",
        json.dumps(
            {
                "body": "abc",
                "properties": {
                    "delivery_tag": "y",
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE},
                },
            }
        ).encode(),
        "not a message: Error: Incorrect padding",
        raw=True,
        redis_only=True,
    ),
    Poison("invalid UTF-8 bytes", b"\xff\xfe\x00garbage", "not a message: JSONDecodeError", raw=True, redis_only=True),
    Poison(
        "a task without an id",
        a_task("a task without an id"),
        "the message cannot be handed to a task: KeyError: 'id'",
        headers={"task": QUEUE},
    ),
    Poison(
        "a body that is not args, kwargs, embed",
        json.dumps("hello").encode(),
        "the message cannot be handed to a task: ValueError",
        headers={"task": QUEUE, "id": "not-a-triple"},
    ),
    Poison(
        "a task name that is not a string",
        a_task("a task name that is not a string"),
        "the message cannot be handed to a task: TypeError: unhashable type: 'list'",
        headers={"task": [QUEUE], "id": "list-name"},
    ),
    Poison(
        "an unknown compression",
        b"zzz",
        "the body cannot be decoded: KeyError: 'application/x-unheard-of'",
        headers={"task": QUEUE, "id": "compressed", "compression": "application/x-unheard-of"},
    ),
    Poison(
        "an ETA that is not a time",
        a_task("an ETA that is not a time"),
        "invalid task message: InvalidTaskError: invalid ETA value 'tomorrow'",
        headers={"task": QUEUE, "id": "eta", "eta": "tomorrow"},
    ),
    Poison(
        "a pickle",
        b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
        "invalid task message: ContentDisallowed: Refusing to deserialize untrusted content of type pickle",
        content_type="application/x-python-serialize",
        headers={"task": QUEUE, "id": "pickled"},
    ),
]


def test_every_kind_of_undeliverable_message_is_kept_aside(
    broker_url: str, orders: Workflow[Order, OrderStatus], start_worker: Callable[..., Worker], store: SQLStore
) -> None:
    inputs = [p for p in [*INPUTS, *MORE] if is_redis(broker_url) or not p.redis_only]
    for poison in inputs:
        poison.put(broker_url)
    worker = start_worker("examples.orders", "order-processing.*", concurrency=1)
    wait_until(lambda: store.count_dead_letters() == len(inputs), 30, "every input kept as a dead letter")
    done = order(orders, "after-everything")
    wait_all_finished(orders, [done], timeout=60)
    assert worker.proc.poll() is None, worker.output()
    kept = {d.body: d.reason for d in store.dead_letters(limit=100)}
    wrong = {
        p.name: kept.get(p.body) for p in inputs if not kept.get(p.body, "").startswith(expected_reason(p, broker_url))
    }
    assert wrong == {}, wrong
    assert "Unrecoverable error" not in worker.output() and "Connection to broker lost" not in worker.output()


def bad_headers(case: str, **headers: Any) -> dict[str, Any]:
    return {"task": QUEUE, "id": f"bad-{case}", **headers}


def soon() -> str:
    return (datetime.now(UTC) + timedelta(seconds=1)).isoformat()


def test_task_messages_whose_headers_celery_would_fail_on_later_are_kept_aside(
    broker_url: str,
    orders: Workflow[Order, OrderStatus],
    start_worker: Callable[..., Worker],
    store: SQLStore,
    pg_database: str,
) -> None:
    """Headers Celery reads only later (revoked stamps, time limits, retries…): checked at receipt."""
    # The exact message of the report, pushed as Redis holds it: bad stamps and an ETA a second ahead.
    if is_redis(broker_url):
        envelope = {
            "body": base64.b64encode(b"[[],{},{}]").decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": QUEUE, "id": "poison", "stamped_headers": 5, "eta": soon()},
            "properties": {
                "delivery_tag": "poison-tag",
                "body_encoding": "base64",
                "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE},
                "priority": 0,
            },
        }
        push_raw(broker_url, QUEUE, json.dumps(envelope).encode())
    cases = {
        "stamps-eta": bad_headers("stamps-eta", stamped_headers=5, eta=soon()),
        "stamps": bad_headers("stamps", stamped_headers=5),
        "stamps-object": bad_headers("stamps-object", stamped_headers=["a"], stamps=["a"]),
        "timelimit": bad_headers("timelimit", timelimit="soon"),
        "retries": bad_headers("retries", retries="1"),
        "root": bad_headers("root", root_id=["r"]),
        "ignore-result": bad_headers("ignore-result", ignore_result="yes"),
        "argsrepr": bad_headers("argsrepr", argsrepr={"a": 1}),
        "origin": bad_headers("origin", origin=5),
        "expires": bad_headers("expires", expires=17),
    }
    for case, headers in cases.items():
        publish(broker_url, QUEUE, a_task(case), headers=headers)
    expected = len(cases) + is_redis(broker_url)
    worker = start_worker("examples.orders", "order-processing.*", concurrency=1)
    wait_until(lambda: store.count_dead_letters() == expected, 30, "every message kept as a dead letter")
    done = order(orders, "after-bad-headers")
    wait_all_finished(orders, [done], timeout=60)
    time.sleep(1.5)  # past every ETA: nothing was left for a timer to fail on
    out = worker.output()
    assert worker.proc.poll() is None, out
    assert "Unrecoverable error" not in out and "Error in timer" not in out, out
    letters = store.dead_letters(limit=100)
    assert all(d.queue == QUEUE and d.reason.startswith("invalid task message: InvalidTaskError:") for d in letters)
    assert any("header 'stamped_headers' must be a list of strings, got 5" in d.reason for d in letters), letters
    assert depth(broker_url, QUEUE) == 0
    listed = cli("-A", "examples.orders", "dead-letters", "list", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    assert len(dead_letter_lines(listed.stdout)) == expected, listed.stdout
