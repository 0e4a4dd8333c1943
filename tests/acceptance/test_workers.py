"""Acceptance: the seed's order workflow on real workers, Redis and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import Worker
from tests.acceptance.helpers import client_app, wait_all_finished, wait_until
from tests.acceptance.killapp import REDELIVER_AFTER, Job, Step
from tests.acceptance.killapp import builder as kill_builder
from workflow_celery import RunState, SQLStore, Workflow

FLOW = [OrderStatus.CREATED, OrderStatus.VALIDATED, OrderStatus.PAID, OrderStatus.FULFILLED]


def test_500_runs_complete_on_two_workers_with_contiguous_history(
    orders: Workflow[Order, OrderStatus], start_worker: Callable[..., Worker], store: SQLStore
) -> None:
    workers = [start_worker("examples.orders", "order-processing.*", concurrency=1) for _ in range(2)]
    run_ids = [
        orders.trigger(f"order-{i}", initial_value=Order(id=f"order-{i}", items=["a"], total=10.0)) for i in range(500)
    ]
    elapsed = wait_all_finished(orders, run_ids, timeout=240)
    print(f"500 runs completed in {elapsed:.1f}s")
    for run_id in run_ids:
        rec = store.lookup(run_id)
        assert rec.run_state == RunState.COMPLETED and rec.status == OrderStatus.FULFILLED
        history = store.history(run_id)
        assert [h.version for h in history] == [1, 2, 3, 4]
        assert [h.status for h in history] == FLOW
    assert store.outbox() == []
    # both workers did part of the work
    for w in workers:
        assert "order-processing.created" in w.output()
        assert re.search(r"order-processing\.\w+\[.*\] succeeded", w.output())


def test_queues_are_expanded_from_the_pattern(start_worker: Callable[..., Worker]) -> None:
    worker = start_worker("examples.orders", "order-processing.*", concurrency=1)
    banner = worker.output()
    queues = sorted(set(re.findall(r"^\s*\.> (\S+)\s+exchange=", banner, re.M)))
    assert queues == [
        "order-processing.created",
        "order-processing.data-deletion",
        "order-processing.hooks.cancelled",
        "order-processing.hooks.completed",
        "order-processing.hooks.paused",
        "order-processing.paid",
        "order-processing.validated",
    ]
    assert "celery exchange=" not in banner  # the default queue is not consumed


def test_pattern_matching_nothing_stops_the_worker(start_worker: Callable[..., Worker]) -> None:
    worker = start_worker("examples.orders", "no-such-workflow.*", wait=False)
    assert worker.proc.wait(60) == 2  # a usage error of `celery worker`
    out = worker.output()
    assert "no-such-workflow.*" in out and "matches no queue" in out, out
    assert "Traceback" not in out and "Error: Invalid value for '-Q' / '-X': queue pattern" in out, out
    assert "order-processing.created" in out  # the message lists what exists


def test_same_message_delivered_five_times_moves_the_run_once(
    orders: Workflow[Order, OrderStatus], broker_url: str, start_worker: Callable[..., Worker], store: SQLStore
) -> None:
    run_id = orders.trigger("dup-1", initial_value=Order(id="dup-1", items=["a"], total=1.0))
    [doorbell] = store.outbox(run_id)
    app = client_app(broker_url)
    for _ in range(4):
        app.send_task(doorbell.task, kwargs=dict(doorbell.body), queue=doorbell.queue)
    worker = start_worker("examples.orders", "order-processing.*", concurrency=2)
    wait_all_finished(orders, [run_id], timeout=60)
    history = store.history(run_id)
    assert [h.version for h in history] == [1, 2, 3, 4]
    assert [h.status for h in history] == FLOW
    deadline = time.monotonic() + 20
    while worker.output().count("order-processing.created[") < 10 and time.monotonic() < deadline:
        time.sleep(0.2)  # 5 received + 5 succeeded lines
    out = worker.output()
    assert len(re.findall(r"order-processing\.created\[.*\] succeeded .*'moved'", out)) == 1, out
    # a copy that arrives after the commit is dropped unread; one that arrives while the step runs finds the
    # doorbell claimed and is dropped without running the step a second time
    dropped = re.findall(r"order-processing\.created\[.*\] succeeded .*'(dropped_stale|dropped_running)'", out)
    assert len(dropped) == 4, out


def test_unknown_run_and_invalid_json_are_dropped_and_the_worker_goes_on(
    orders: Workflow[Order, OrderStatus], broker_url: str, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker("examples.orders", "order-processing.*", concurrency=1)
    app = client_app(broker_url)
    app.send_task(
        "order-processing.created",
        kwargs={"workflow": "order-processing", "run_id": "no-such-run", "status": 1, "version": 1},
        queue="order-processing.created",
    )
    with Connection(broker_url) as conn:
        producer = Producer(conn)
        producer.publish(
            b"{this is not json",
            exchange=Exchange("order-processing.created", type="direct"),
            routing_key="order-processing.created",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "order-processing.created", "id": "garbage-1"},
        )
    run_id = orders.trigger("after-garbage", initial_value=Order(id="x", items=["a"], total=1.0))
    wait_all_finished(orders, [run_id], timeout=60)
    assert worker.proc.poll() is None
    out = worker.output()
    assert "dropping message for unknown run no-such-run of workflow order-processing at status CREATED" in out
    assert "Can't decode message body" in out and "this is not json" in out


def test_worker_killed_mid_step_loses_no_run(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = kill_builder().build(client_app(broker_url), store, redeliver_after=REDELIVER_AFTER)
    victim = start_worker("tests.acceptance.killapp", "slow-steps.*", concurrency=1)
    run_id = wf.trigger("job-1", initial_value=Job(marker_dir=str(tmp_path), sleep=60))
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(f"{run_id}.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(f"{run_id}.*")), "the slow step never started"
    victim.kill_hard()
    killed_at = time.monotonic()
    start_worker("tests.acceptance.killapp", "slow-steps.*", concurrency=1)
    wait_all_finished(wf, [run_id], timeout=REDELIVER_AFTER.total_seconds() + 60)
    recovered_in = time.monotonic() - killed_at
    print(f"run recovered {recovered_in:.1f}s after SIGKILL (redeliver_after={REDELIVER_AFTER})")
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.COMPLETED and rec.status == Step.DONE
    assert rec.object.attempts_seen == 2  # the killed attempt, then the one that finished
    assert [h.status for h in store.history(run_id)] == [Step.START, Step.WORKED, Step.DONE]
    assert recovered_in < REDELIVER_AFTER.total_seconds() + 30


def test_the_order_example_with_its_three_hooks(
    orders: Workflow[Order, OrderStatus], start_worker: Callable[..., Worker], store: SQLStore, pg_database: str
) -> None:
    from examples.notifications import Notifications

    shipped, held, dropped = (
        orders.trigger(f"ex-{n}", initial_value=Order(id=f"ex-{n}", items=["book"], total=9.5)) for n in range(3)
    )
    orders.pause(held, "address check")  # before any worker has seen it
    orders.pause(dropped, "customer called")
    orders.cancel(dropped, "customer cancelled")
    start_worker("examples.orders", "order-processing.*", concurrency=2)
    wait_all_finished(orders, [shipped, dropped], timeout=60)
    orders.resume(held)
    wait_all_finished(orders, [held], timeout=60)
    notifications = Notifications(pg_database)
    try:
        deadline = time.monotonic() + 60  # longer than redeliver_after: even a lost hook message is rung again
        while len(notifications.all()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = notifications.all()
    finally:
        notifications.dispose()
    sent = {(n["foreign_id"], n["kind"]) for n in rows}
    assert sent == {
        ("ex-0", "confirmation"),
        ("ex-1", "ticket"),
        ("ex-1", "confirmation"),
        ("ex-2", "ticket"),
        ("ex-2", "cleanup"),
    }
    detail = {(n["foreign_id"], n["kind"]): n["detail"] for n in rows}
    assert detail[("ex-1", "ticket")] == "order ex-1 paused at CREATED: address check"
    # A hook's doorbell is deleted right after the hook returned: wait for the last one.
    wait_until(lambda: store.outbox() == [], 30, "every doorbell to be answered")
