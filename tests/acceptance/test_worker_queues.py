"""Acceptance: ``celery worker``, ``purge``, ``inspect`` and ``control`` read queue names as Celery users expect.

No ``-Q`` consumes everything the app has; ``-X`` takes the same patterns as
``-Q``; ``celery purge`` expands them too; ``celery inspect active_queues``
shows the expanded names. On Redis and RabbitMQ.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from examples.notifications import Notifications
from examples.order_processing import Order, OrderStatus
from tests.acceptance.brokers import depth, publish
from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import wait_all_finished, wait_until
from workflow_celery import Workflow

STEP_QUEUES = [
    "order-processing.created",
    "order-processing.data-deletion",
    "order-processing.paid",
    "order-processing.validated",
]
HOOK_QUEUES = [
    "order-processing.hooks.cancelled",
    "order-processing.hooks.completed",
    "order-processing.hooks.paused",
]


@pytest.fixture
def notifications(pg_database: str) -> Iterator[Notifications]:
    """What the order workflow's hooks wrote."""
    sent = Notifications(pg_database)
    yield sent
    sent.dispose()


def celery(*args: str, broker: str, db: str) -> subprocess.CompletedProcess[str]:
    """``celery -A examples.orders …`` as a user runs it."""
    env = {**os.environ, "CELERY_BROKER_URL": broker, "WORKFLOW_CELERY_DATABASE_URL": db}
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "examples.orders", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def banner_queues(worker: Worker) -> list[str]:
    return sorted(set(re.findall(r"^\s*\.> (\S+)\s+exchange=", worker.output(), re.M)))


def active_queues(node: str, broker: str, db: str) -> list[str]:
    """What ``celery inspect active_queues`` says the worker consumes."""
    out = celery("inspect", "active_queues", "-d", node, "--json", "--timeout", "10", broker=broker, db=db)
    assert out.returncode == 0, out.stderr
    return sorted(q["name"] for q in json.loads(out.stdout)[node])


def order(orders: Workflow[Order, OrderStatus], name: str) -> str:
    return orders.trigger(name, initial_value=Order(id=name, items=["a"], total=5.0))


def confirmations(notifications: Notifications) -> list[str]:
    return [n["run_id"] for n in notifications.all() if n["kind"] == "confirmation"]


def test_a_worker_without_q_consumes_every_queue_of_the_app(
    orders: Workflow[Order, OrderStatus],
    start_worker: Callable[..., Worker],
    notifications: Notifications,
    broker_url: str,
    pg_database: str,
) -> None:
    worker = start_worker("examples.orders", None, concurrency=1, name="all")
    everything = sorted(["celery", *STEP_QUEUES, *HOOK_QUEUES])  # Celery's default queue stays consumed
    assert banner_queues(worker) == everything
    assert active_queues(f"all@{os.uname().nodename}", broker_url, pg_database) == everything
    run_id = order(orders, "no-q")
    wait_all_finished(orders, [run_id], timeout=60)
    wait_until(lambda: confirmations(notifications) == [run_id], 30, "the on_complete hook")


def test_x_takes_patterns_and_a_steps_only_worker_runs_no_hook(
    orders: Workflow[Order, OrderStatus],
    start_worker: Callable[..., Worker],
    notifications: Notifications,
    broker_url: str,
    pg_database: str,
) -> None:
    node = f"steps@{os.uname().nodename}"
    steps = start_worker(
        "examples.orders", "order-processing.*", args=["-X", "order-processing.hooks.*"], concurrency=1, name="steps"
    )
    assert banner_queues(steps) == STEP_QUEUES
    assert active_queues(node, broker_url, pg_database) == STEP_QUEUES
    run_id = order(orders, "steps-only")
    wait_all_finished(orders, [run_id], timeout=60)
    # The hook's message was sent and waits in its queue, untouched by the steps-only worker.
    wait_until(lambda: depth(broker_url, "order-processing.hooks.completed") == 1, 30, "the hook's message queued")
    assert confirmations(notifications) == []
    assert "order-processing.hooks" not in "".join(line for line in steps.output().splitlines() if "Task " in line)

    start_worker("examples.orders", "order-processing.hooks.*", concurrency=1, name="hooks")
    wait_until(lambda: confirmations(notifications) == [run_id], 30, "the hooks worker running on_complete")

    # celery control takes the same patterns: the steps worker can be told to take the hooks on too.
    added = celery("control", "add_consumer", "order-processing.hooks.*", "-d", node, broker=broker_url, db=pg_database)
    assert added.returncode == 0, added.stderr
    wait_until(
        lambda: active_queues(node, broker_url, pg_database) == sorted([*STEP_QUEUES, *HOOK_QUEUES]),
        30,
        "the hook queues added to the steps worker",
    )
    assert steps.proc.poll() is None


def test_x_pattern_matching_nothing_stops_the_worker(start_worker: Callable[..., Worker]) -> None:
    worker = start_worker("examples.orders", "order-processing.*", args=["-X", "order-procesing.hooks.*"], wait=False)
    assert worker.proc.wait(60) != 0
    out = worker.output()
    assert "queue pattern 'order-procesing.hooks.*' matches no queue of this app" in out, out


def test_purge_takes_the_same_patterns_and_purges_every_queue_without_q(broker_url: str, pg_database: str) -> None:
    queues = ["order-processing.created", "order-processing.paid", "order-processing.hooks.completed", "celery"]
    for name in queues:
        publish(broker_url, name, b"[[], {}, {}]", headers={"task": name, "id": f"junk-{name}"})
    assert [depth(broker_url, name) for name in queues] == [1, 1, 1, 1]

    steps = celery(
        "purge", "-f", "-Q", "order-processing.*", "-X", "order-processing.hooks.*", broker=broker_url, db=pg_database
    )
    assert steps.returncode == 0, steps.stderr
    assert steps.stdout.strip() == "Purged 2 messages from 4 known task queues."
    assert [depth(broker_url, name) for name in queues] == [0, 0, 1, 1]

    typo = celery("purge", "-f", "-Q", "order-procesing.*", broker=broker_url, db=pg_database)
    assert typo.returncode == 1
    [line] = typo.stderr.strip().splitlines()
    assert line.startswith("Error: queue pattern 'order-procesing.*' matches no queue of this app; known queues: ")

    everything = celery("purge", "-f", broker=broker_url, db=pg_database)
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.strip() == "Purged 2 messages from 8 known task queues."
    assert [depth(broker_url, name) for name in queues] == [0, 0, 0, 0]
