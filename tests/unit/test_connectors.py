"""Connectors: events handed to fn(wf, event), acknowledged after it returned, retried, parked; one run per event."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from workflow_celery import Builder, ConfigurationError, MemoryStore, RunState, Workflow
from workflow_celery.connectors import ConnectorEvent, ConnectorRunner, Delivery, parked_queue
from workflow_celery.testing import in_process

from .workflows import Status, Thing, chain

FAST = {"err_backoff": timedelta(milliseconds=1), "max_backoff": timedelta(milliseconds=5)}


class ListSource:
    """Events from a list; each consumer gets what no other holds; acknowledged ones are gone."""

    def __init__(self, deliveries: Sequence[Delivery], max_attempts: int = 3) -> None:
        self.name = "list"
        self.max_attempts = max_attempts
        self.pending = list(deliveries)
        self.acked: list[Any] = []
        self.lock = threading.Lock()

    keep_every: float | None = None

    def open(self, consumer: str, connector: str) -> ListSource:
        return self

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        with self.lock:
            taken, self.pending = self.pending[:5], self.pending[5:]
        return taken

    def ack(self, delivery: Delivery) -> None:
        with self.lock:
            self.acked.append(delivery.token)

    def touch(self, delivery: Delivery) -> bool:
        return True

    def close(self) -> None:
        return None


def event(i: int, foreign_id: str | None = None) -> Delivery:
    e = ConnectorEvent(id=f"e-{i}", foreign_id=foreign_id or f"order-{i}", type="created", data=b"{}")
    return Delivery(e, f'{{"id": "e-{i}"}}'.encode(), f"e-{i}")


def start_run(wf: Workflow[Thing, Status], e: ConnectorEvent) -> None:
    wf.trigger(e.foreign_id, initial_value=Thing(name=e.id))


def connected(source: ListSource, fn: Any) -> tuple[Workflow[Thing, Status], MemoryStore]:
    """The chain workflow with the connector ``orders-in`` on ``source``, on a memory store, fast backoff."""
    b = chain()
    b.add_connector("orders-in", source, fn)
    store = MemoryStore()
    wf, _ = in_process(b, store=store, **FAST)
    return wf, store


def test_each_event_starts_one_run_and_is_acknowledged_after() -> None:
    source = ListSource([event(i) for i in range(12)])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    wf, broker = in_process(b)
    runner = ConnectorRunner([wf], consumer="t")
    stream = source.open("t", "chain.orders-in")
    for d in [*stream.fetch(0), *stream.fetch(0), *stream.fetch(0)]:
        assert runner.handle(wf, wf.definition.connectors["orders-in"], stream, d)
    broker.run_until_idle()
    assert sorted(source.acked) == sorted(f"e-{i}" for i in range(12))
    runs = wf.list(limit=100)
    assert len(runs) == 12 and {r.object.name for r in runs} == {f"e-{i}" for i in range(12)}
    assert all(r.run_state == RunState.COMPLETED for r in runs)


def test_an_event_delivered_again_finds_its_run_and_starts_no_other() -> None:
    source = ListSource([])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    wf, broker = in_process(b)
    spec = wf.definition.connectors["orders-in"]
    runner = ConnectorRunner([wf], consumer="t")
    again = event(1)
    assert runner.handle(wf, spec, source, again)
    assert runner.handle(wf, spec, source, again)  # in progress: the same run
    broker.run_until_idle()
    assert runner.handle(wf, spec, source, again)  # completed: still the same run, no second one
    [run] = wf.list()
    assert run.run_state == RunState.COMPLETED and source.acked == ["e-1", "e-1", "e-1"]
    other = event(2, foreign_id="order-1")  # another event about the same order starts a new run
    assert runner.handle(wf, spec, source, other)
    assert len(wf.list()) == 2


def test_a_failing_event_is_retried_then_parked_as_a_dead_letter() -> None:
    calls: list[str] = []

    def flaky(wf: Workflow[Thing, Status], e: ConnectorEvent) -> None:
        calls.append(e.id)
        if e.id == "e-1":
            raise RuntimeError("the CRM is down")
        if calls.count(e.id) < 2:
            raise RuntimeError("a blip")
        start_run(wf, e)

    source = ListSource([event(1), event(2)], max_attempts=3)
    wf, store = connected(source, flaky)
    runner = ConnectorRunner([wf], consumer="worker-1")
    spec = wf.definition.connectors["orders-in"]
    for d in source.fetch(0):
        assert runner.handle(wf, spec, source, d)
    assert calls == ["e-1", "e-1", "e-1", "e-2", "e-2"] and source.acked == ["e-1", "e-2"]
    [parked] = store.dead_letters()
    assert parked.queue == parked_queue(wf, spec) == "connector:chain.orders-in"
    assert parked.reason == "failed 3 times: RuntimeError: the CRM is down"  # one line; the traceback apart
    assert "Traceback (most recent call last)" in json.loads(parked.headers)["traceback"]
    assert (
        parked.body == b'{"id": "e-1"}' and parked.worker == "worker-1" and '"foreign_id": "order-1"' in parked.headers
    )
    assert [r.foreign_id for r in wf.list()] == ["order-2"]


def test_an_entry_that_is_not_an_event_is_parked_at_once(caplog: pytest.LogCaptureFixture) -> None:
    source = ListSource([Delivery(None, b"\xffjunk", "x-1", reason="stream entry x-1 has no foreign_id field")])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    store = MemoryStore()
    wf, _ = in_process(b, store=store)
    runner = ConnectorRunner([wf], consumer="t")
    [d] = source.fetch(0)
    assert runner.handle(wf, wf.definition.connectors["orders-in"], source, d)
    [parked] = store.dead_letters()
    assert parked.body == b"\xffjunk" and parked.reason == "not an event: stream entry x-1 has no foreign_id field"
    assert "parked, not an event: stream entry x-1 has no foreign_id field" in caplog.text  # operators see it


def test_the_in_process_broker_consumes_connectors_while_started() -> None:
    source = ListSource([event(i) for i in range(30)])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    wf, broker = in_process(b)
    with broker.start(workers=2):
        deadline = threading.Event()
        for _ in range(200):
            if sum(r.run_state == RunState.COMPLETED for r in wf.list(limit=100)) == 30:
                break
            deadline.wait(0.05)
    assert sum(r.run_state == RunState.COMPLETED for r in wf.list(limit=100)) == 30


def test_bad_connectors_are_refused_when_added() -> None:
    b = Builder("bad-connectors", Thing, Status)
    source = ListSource([])
    with pytest.raises(ConfigurationError, match="connector name 'no spaces' must start"):
        b.add_connector("no spaces", source, start_run)
    with pytest.raises(ConfigurationError, match="is not a ConnectorSource"):
        b.add_connector("in", object(), start_run)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fn must be callable"):
        b.add_connector("in", source, "start_run")  # type: ignore[arg-type]
    b.add_connector("in", source, start_run)
    with pytest.raises(ConfigurationError, match="connector 'in' is added twice"):
        b.add_connector("in", source, start_run)


def test_a_function_raising_system_exit_fails_its_event_and_the_consumer_goes_on() -> None:
    def exits(wf: Workflow[Thing, Status], e: ConnectorEvent) -> None:
        if e.id == "e-1":
            raise SystemExit("goodbye")
        start_run(wf, e)

    source = ListSource([event(1), event(2)], max_attempts=2)
    wf, store = connected(source, exits)
    runner = ConnectorRunner([wf], consumer="t").start()
    try:
        for _ in range(200):
            if len(source.acked) == 2:
                break
            threading.Event().wait(0.05)
    finally:
        runner.stop()
    assert sorted(source.acked) == ["e-1", "e-2"]
    [parked] = store.dead_letters()
    assert parked.reason == "failed 2 times: SystemExit: goodbye"
    assert [r.foreign_id for r in wf.list()] == ["order-2"]


def test_identical_entries_that_are_not_events_are_parked_one_each() -> None:
    same = b"not json at all"
    source = ListSource([Delivery(None, same, i, reason="the body is not JSON", key=f"m-{i}") for i in range(3)])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    store = MemoryStore()
    wf, _ = in_process(b, store=store)
    runner = ConnectorRunner([wf], consumer="t")
    for d in source.fetch(0):
        assert runner.handle(wf, wf.definition.connectors["orders-in"], source, d)
    assert [letter.body for letter in store.dead_letters()] == [same] * 3


class TakenOver(ListSource):
    """Every event but the first is taken over by another consumer while this one holds it."""

    keep_every = 0.01

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        super().__init__(deliveries)
        self.touched: list[str] = []

    def touch(self, delivery: Delivery) -> bool:
        with self.lock:
            self.touched.append(delivery.token)
        return bool(delivery.token == "e-0")


def test_held_events_are_kept_and_one_taken_over_is_left_to_its_new_consumer() -> None:
    source = TakenOver([event(i) for i in range(3)])
    b = chain()
    b.add_connector("orders-in", source, start_run)
    wf, _ = in_process(b)
    runner = ConnectorRunner([wf], consumer="t").start()
    try:
        for _ in range(200):
            if source.acked and {"e-1", "e-2"} <= set(source.touched):
                break
            threading.Event().wait(0.05)
    finally:
        runner.stop()
    assert source.acked == ["e-0"] and [r.foreign_id for r in wf.list()] == ["order-0"]


def test_connectors_of_one_name_in_two_workflows_start_a_run_each_for_one_event() -> None:
    target, broker = in_process(chain())

    def start_target(wf: Workflow[Thing, Status], e: ConnectorEvent) -> None:
        target.trigger(e.foreign_id, initial_value=Thing(name=wf.name))

    for name in ("billing", "shipping"):
        source = ListSource([event(7, foreign_id="order-7")])
        b = Builder(name, Thing, Status)
        b.add_step(Status.START, lambda run: Status.MIDDLE, Status.MIDDLE)
        b.add_connector("orders", source, start_target)
        wf, _ = in_process(b)
        runner = ConnectorRunner([wf], consumer="t")
        [d] = source.fetch(0)
        assert runner.handle(wf, wf.definition.connectors["orders"], source, d)
        broker.run_until_idle()  # the first run completes before the second event comes
    runs = target.list(limit=10)
    assert sorted(r.object.name for r in runs) == ["billing", "shipping"]
