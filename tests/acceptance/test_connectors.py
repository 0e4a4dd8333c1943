"""Acceptance: connectors consumed by two real workers, one of them SIGKILLed halfway: one run per event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis
from kombu.connection import Connection

from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import wait_until
from workflow_celery import RunState, SQLStore

NAME = "wfc-inbound-orders"
WORKFLOW = "inbound-orders"


def _runs(store: SQLStore) -> int:
    return store.count_runs(WORKFLOW)


def _kill_one_halfway(store: SQLStore, workers: list[Worker], total: int) -> None:
    wait_until(lambda: _runs(store) >= total // 3, 180, f"a third of the {total} events to start runs")
    workers[0].kill_hard()


def _check_one_run_per_event(store: SQLStore, total: int) -> None:
    wait_until(lambda: _runs(store) >= total, 240, f"{total} runs")
    runs = store.list_runs(WORKFLOW, limit=total + 100)
    assert len(runs) == total
    assert sorted(r.foreign_id for r in runs) == sorted(f"order-{i}" for i in range(total))
    wait_until(lambda: store.count_runs(WORKFLOW, run_state=RunState.COMPLETED) == total, 240, "every run to complete")


def _dead_letters(pg_database: str, broker_url: str) -> list[dict[str, object]]:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    out = subprocess.run(
        [sys.executable, "-m", "workflow_celery.cli", "-A", "tests.acceptance.connectorapp", "dead-letters", "list",
         "--queue", "connector:inbound-orders.orders-in", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    letters: list[dict[str, object]] = json.loads(out.stdout)["dead_letters"]
    return letters


@pytest.mark.parametrize("broker", ["redis"])
def test_a_redis_stream_shared_by_two_workers_starts_one_run_per_event_when_one_is_killed(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore, pg_database: str
) -> None:
    total = 1000
    client = redis.Redis.from_url(broker_url)
    for i in range(total):
        client.xadd(NAME, {"foreign_id": f"order-{i}", "type": "created", "data": json.dumps({"n": i})})
    client.xadd(NAME, {"type": "created"})  # no foreign_id: parked at once
    client.xadd(NAME, {"foreign_id": "poison", "type": "created"})  # its function fails: parked after 3 tries
    workers = [start_worker("tests.acceptance.connectorapp", "inbound-orders.*", concurrency=1) for _ in range(2)]
    _kill_one_halfway(store, workers, total)
    _check_one_run_per_event(store, total)
    wait_until(lambda: len(_dead_letters(pg_database, broker_url)) == 2, 120, "the two bad entries to be parked")
    reasons = sorted(str(letter["reason"]) for letter in _dead_letters(pg_database, broker_url))
    assert reasons[0].startswith("failed 3 times: ValueError: this order cannot be read")
    assert reasons[1].startswith("not an event: stream entry") and "has no foreign_id field" in reasons[1]
    group = "workflow-celery.inbound-orders.orders-in"  # the default: one group per connector
    wait_until(lambda: client.xpending(NAME, group)["pending"] == 0, 120, "every entry acknowledged")
    consumers = client.xinfo_consumers(NAME, group)
    assert len(consumers) >= 2 and all(c["pending"] == 0 for c in consumers)


@pytest.mark.parametrize("broker", ["rabbitmq"])
def test_a_rabbitmq_queue_shared_by_two_workers_starts_one_run_per_event_when_one_is_killed(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore
) -> None:
    total = 300
    env = {"WFC_CONNECTOR_SOURCE": "kombu"}
    workers = [
        start_worker("tests.acceptance.connectorapp", "inbound-orders.*", concurrency=1, env=env) for _ in range(2)
    ]
    with Connection(broker_url) as conn:
        queue = conn.SimpleQueue(NAME, serializer="json")
        for i in range(total):
            queue.put({"id": f"evt-{i}", "foreign_id": f"order-{i}", "type": "created"})
        queue.close()
    _kill_one_halfway(store, workers, total)
    _check_one_run_per_event(store, total)


@pytest.mark.parametrize("broker", ["redis"])
def test_the_inbound_orders_example_runs_as_its_docstring_says(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore, pg_database: str
) -> None:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    published = subprocess.run(
        [sys.executable, "-m", "examples.inbound_orders", "publish", "30"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert published.stdout == "added 30 entries to the stream shop-orders\n"
    redis.Redis.from_url(broker_url).xadd("shop-orders", {"foreign_id": "shop-bad", "data": "not json"})
    start_worker("examples.inbound_orders", "inbound-orders.*", concurrency=1)
    start_worker("examples.inbound_orders", "inbound-orders.*", concurrency=1)
    wait_until(lambda: store.count_runs("inbound-orders", run_state=RunState.COMPLETED) == 30, 120, "30 runs")
    runs = store.list_runs("inbound-orders", limit=100)
    assert sorted(r.status for r in runs).count(3) == 3  # shop-10, -20, -30 have no items: REJECTED
    parked_at = "connector:inbound-orders.shop-stream"
    wait_until(lambda: store.count_dead_letters(queue=parked_at) == 1, 60, "the bad entry to be parked")
    [parked] = store.dead_letters(queue=parked_at)
    assert "JSONDecodeError" in parked.reason and b"not json" in parked.body
    listed = subprocess.run(
        [sys.executable, "-m", "workflow_celery.cli", "-A", "examples.inbound_orders", "dead-letters", "list",
         "--queue", parked_at],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (
        parked.id in listed.stdout
        and "(1 dead letter from queue connector:inbound-orders.shop-stream)" in listed.stdout
    )
