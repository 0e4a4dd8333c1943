"""Every failure before a commit is a failed attempt: counted, backed off, pausing the run at the limit.

Whichever code raised it: the step, a timer, a timeout or callback function,
encoding the object, a store write, or the process that died holding the
doorbell. And recording a failure never fails, whatever the exception carries.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from workflow_celery import (
    Builder,
    InProcessBroker,
    InvalidTransition,
    MemoryStore,
    Outcome,
    Run,
    RunState,
    Workflow,
)
from workflow_celery.core.doorbell import with_attempt
from workflow_celery.core.errors import AttemptAbandoned
from workflow_celery.core.ports import OutboxMessage
from workflow_celery.core.record import Record
from workflow_celery.testing import FakeClock

PAUSE_AFTER = 3


class Order(enum.IntEnum):
    UNKNOWN = 0
    CREATED = 1
    WAITING = 2
    DONE = 3


@dataclass
class Parcel:
    calls: list[str] = field(default_factory=list)
    note: Any = ""


def build(
    configure: Callable[[Builder[Parcel, Order]], object], store: MemoryStore | None = None, **options: Any
) -> tuple[Workflow[Parcel, Order], InProcessBroker, MemoryStore, FakeClock]:
    clock = FakeClock()
    b = Builder("parcels", Parcel, Order)
    configure(b)
    broker, store = InProcessBroker(), store or MemoryStore()
    wf = b.build(broker, store, clock=clock, pause_after_err_count=PAUSE_AFTER, **options)
    return wf, broker, store, clock


def retry_until_settled(wf: Workflow[Any, Any], broker: InProcessBroker, clock: FakeClock, run_id: str) -> None:
    """Answer everything, moving the clock to each retry, until the run stops failing."""
    for _ in range(20):
        broker.drain()
        broker.relay()
        broker.drain()
        record = wf.store.lookup(run_id)
        if record.run_state != RunState.RUNNING and record.run_state != RunState.INITIATED:
            return
        due = [d for d, _ in broker.scheduled] + [m.due_at for m in wf.store.outbox(run_id)]
        clock.advance(max(min(due) - clock.now(), timedelta(0)))
    raise AssertionError("the run never settled")


def assert_paused_after(wf: Workflow[Any, Any], run_id: str, status: Order, error_type: str, text: str) -> None:
    record = wf.store.lookup(run_id)
    assert (record.run_state, record.status) == (RunState.PAUSED, status)
    [counter] = wf.errors(run_id)
    assert (counter.status, counter.count) == (status, PAUSE_AFTER)
    assert counter.last_error.error_type == error_type and text in counter.last_error.message
    assert record.meta.run_state_reason.startswith("max error retry threshold hit: ")


def step_to_waiting(run: Run[Parcel, Order]) -> Order:
    run.object.calls.append("step")
    return Order.WAITING


def expire(run: Run[Parcel, Order], now: datetime) -> Order:
    return Order.DONE


def with_timer(timer: Callable[[Run[Parcel, Order], datetime], Any]) -> Callable[[Builder[Parcel, Order]], None]:
    def configure(b: Builder[Parcel, Order]) -> None:
        b.add_step(Order.CREATED, step_to_waiting, Order.WAITING)
        b.add_timeout(Order.WAITING, timer, expire, Order.DONE)

    return configure


@pytest.mark.parametrize(
    ("timer", "error_type", "text"),
    [
        (lambda run, now: datetime.now() + timedelta(hours=1), "builtins.TypeError", "timezone-aware"),
        (lambda run, now: 3600, "builtins.TypeError", "returned 3600"),
        (lambda run, now: 1 / 0, "builtins.ZeroDivisionError", "division by zero"),
    ],
    ids=["naive-datetime", "not-a-datetime", "raises"],
)
def test_a_bad_timer_is_a_failed_attempt_at_its_status(timer: Any, error_type: str, text: str) -> None:
    wf, broker, _store, clock = build(with_timer(timer))
    run_id = wf.trigger("p-1")
    retry_until_settled(wf, broker, clock, run_id)
    assert_paused_after(wf, run_id, Order.WAITING, error_type, text)
    assert wf.lookup(run_id).object.calls == ["step"]  # the step before it committed, once


def test_a_failing_timeout_function_is_a_failed_attempt() -> None:
    def boom(run: Run[Parcel, Order], now: datetime) -> Order:
        raise RuntimeError("courier API down")

    def configure(b: Builder[Parcel, Order]) -> None:
        b.add_step(Order.CREATED, step_to_waiting, Order.WAITING)
        b.add_timeout(Order.WAITING, lambda run, now: now + timedelta(minutes=5), boom, Order.DONE)

    wf, broker, _store, clock = build(configure)
    run_id = wf.trigger("p-1")
    broker.drain()
    clock.advance(timedelta(minutes=5))
    retry_until_settled(wf, broker, clock, run_id)
    assert_paused_after(wf, run_id, Order.WAITING, "builtins.RuntimeError", "courier API down")


def test_a_failing_callback_is_counted_raised_to_the_caller_and_pauses_at_the_limit() -> None:
    def reject(run: Run[Parcel, Order], payload: bytes) -> Order:
        raise ValueError(f"bad signature on {payload!r}")

    def configure(b: Builder[Parcel, Order]) -> None:
        b.add_step(Order.CREATED, step_to_waiting, Order.WAITING)
        b.add_callback(Order.WAITING, reject, Order.DONE)

    wf, broker, _store, _clock = build(configure)
    run_id = wf.trigger("p-1")
    broker.drain()
    for attempt in range(1, PAUSE_AFTER + 1):
        with pytest.raises(ValueError, match="bad signature"):
            wf.callback("p-1", Order.WAITING, b"sig")
        assert wf.errors(run_id)[0].count == attempt
    assert_paused_after(wf, run_id, Order.WAITING, "builtins.ValueError", "bad signature")
    wf.callback("p-1", Order.WAITING, b"sig")  # a paused run ignores callbacks


def test_a_callback_returning_a_forbidden_status_is_a_failed_attempt() -> None:
    def configure(b: Builder[Parcel, Order]) -> None:
        b.add_step(Order.CREATED, step_to_waiting, Order.WAITING)
        b.add_callback(Order.WAITING, lambda run, payload: Order.CREATED, Order.DONE)

    wf, broker, _, _ = build(configure)
    run_id = wf.trigger("p-1")
    broker.drain()
    with pytest.raises(InvalidTransition, match="not an allowed destination"):
        wf.callback("p-1", Order.WAITING, b"")
    assert wf.errors(run_id)[0].count == 1


def test_an_object_that_cannot_be_encoded_is_a_failed_attempt() -> None:
    def spoil(run: Run[Parcel, Order]) -> Order:
        run.object.note = object()  # not JSON
        return Order.DONE

    wf, broker, _store, clock = build(lambda b: b.add_step(Order.CREATED, spoil, Order.DONE))
    run_id = wf.trigger("p-1")
    retry_until_settled(wf, broker, clock, run_id)
    assert_paused_after(wf, run_id, Order.CREATED, "workflow_celery.core.errors.SerializationError", "JSON")


class FlakyStore(MemoryStore):
    """A store whose next ``failures`` writes of a run fail, as a database that drops connections."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        *,
        reset_errors: bool = False,
        keep_running: bool = False,
    ) -> bool:
        if record.run_state == RunState.COMPLETED and self.failures:
            self.failures -= 1
            raise ConnectionResetError("server closed the connection unexpectedly")
        return super().update_run(
            record, expected_version, outbox, reset_errors=reset_errors, keep_running=keep_running
        )


def test_a_failing_store_write_is_a_failed_attempt() -> None:
    def finish(run: Run[Parcel, Order]) -> Order:
        run.object.calls.append("finish")
        return Order.DONE

    wf, broker, _store, clock = build(lambda b: b.add_step(Order.CREATED, finish, Order.DONE), FlakyStore(2))
    run_id = wf.trigger("p-1")
    broker.drain()
    [counter] = wf.errors(run_id)
    assert counter.count == 1 and counter.last_error.error_type == "builtins.ConnectionResetError"
    retry_until_settled(wf, broker, clock, run_id)
    record = wf.lookup(run_id)
    assert record.run_state == RunState.COMPLETED and record.object.calls == ["finish"]  # only the winner is saved
    assert ("parcels.created", Outcome.RETRY_SCHEDULED) in broker.outcomes


def test_an_attempt_whose_process_died_is_counted_and_backed_off() -> None:
    calls: list[int] = []

    def step(run: Run[Parcel, Order]) -> Order:
        calls.append(1)
        return Order.DONE

    wf, broker, store, clock = build(lambda b: b.add_step(Order.CREATED, step, Order.DONE))
    run_id = wf.trigger("p-1")
    broker._queue.get_nowait()  # the message was taken by a process that then died...
    [bell] = store.outbox(run_id)
    for n in range(PAUSE_AFTER):
        # ...holding the claim: nobody released it, nobody renews it.
        assert store.claim(bell.id, run_id, 1, f"dead-{n}", clock.now(), clock.now() + timedelta(seconds=30)).claimed
        clock.advance(timedelta(seconds=31))
        assert broker.relay() == 1  # the claim ran out: the relay rings the doorbell
        broker.drain()
        broker._scheduled.clear()  # the process running the retry dies too
        assert wf.errors(run_id)[0].count == n + 1
        clock.advance(timedelta(minutes=10))
    record = wf.lookup(run_id)
    assert record.run_state == RunState.PAUSED and calls == []
    [counter] = wf.errors(run_id)
    assert counter.last_error.error_type == "workflow_celery.core.errors.AttemptAbandoned"
    assert record.meta.run_state_reason.startswith("max error retry threshold hit: AttemptAbandoned")
    assert issubclass(AttemptAbandoned, Exception)


def test_a_copy_of_a_failed_attempt_cannot_skip_the_backoff() -> None:
    calls: list[int] = []

    def step(run: Run[Parcel, Order]) -> Order:
        calls.append(1)
        raise ConnectionError("down")

    wf, broker, _store, _clock = build(lambda b: b.add_step(Order.CREATED, step, Order.DONE))
    wf.trigger("p-1")
    first = broker._queue.queue[0]
    broker.drain()
    assert calls == [1]
    broker.send(first.queue, dict(first.body))  # a late duplicate of attempt 1
    broker.drain()
    assert calls == [1] and broker.outcomes[-1] == ("parcels.created", Outcome.DROPPED_STALE)
    broker.send(first.queue, with_attempt(first.body, 2))  # attempt 2 arriving early is the retry itself
    broker.drain()
    assert calls == [1, 1]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("nul \x00 byte"), "nul \\x00 byte"),
        (ValueError("file \udcff name"), "file \\udcff name"),
        (ValueError("x" * 100_000), "characters cut]"),
        (Unprintable(), "<unprintable Unprintable object>"),
    ],
    ids=["nul", "surrogate", "huge", "unprintable"],
)
def test_recording_a_failure_never_fails(exc: Exception, expected: str) -> None:
    def step(run: Run[Parcel, Order]) -> Order:
        raise exc

    wf, broker, _store, clock = build(lambda b: b.add_step(Order.CREATED, step, Order.DONE))
    run_id = wf.trigger("p-1")
    retry_until_settled(wf, broker, clock, run_id)
    record = wf.lookup(run_id)
    assert record.run_state == RunState.PAUSED
    [counter] = wf.errors(run_id)
    assert expected in counter.last_error.message and len(counter.last_error.message) <= 2000
    assert "\x00" not in record.meta.run_state_reason and expected[:20] in record.meta.run_state_reason
    record.meta.run_state_reason.encode("utf-8")


def test_operator_reasons_are_stored_whatever_they_contain() -> None:
    wf, _broker, _, _ = build(lambda b: b.add_step(Order.CREATED, step_to_waiting, Order.WAITING))
    run_id = wf.trigger("p-1")
    wf.pause(run_id, "ticket \x00 #7 \udcff " + "y" * 5000)
    reason = wf.lookup(run_id).meta.run_state_reason
    assert reason.startswith("ticket \\x00 #7 \\udcff ") and len(reason) <= 2000
    wf.resume(run_id)
    wf.cancel(run_id, 42)  # type: ignore[arg-type]
    assert wf.lookup(run_id).meta.run_state_reason == "42"


@pytest.mark.parametrize(
    ("foreign_id", "message"),
    [
        ("", "non-empty"),
        ("a\x00b", "NUL"),
        ("a\udcffb", "lone surrogate"),
        ("x" * 513, "at most 512"),
        (42, "non-empty string"),
    ],
)
def test_foreign_ids_no_store_can_keep_are_refused(foreign_id: Any, message: str) -> None:
    wf, _, store, _ = build(lambda b: b.add_step(Order.CREATED, step_to_waiting, Order.WAITING))
    with pytest.raises(ValueError, match=message):
        wf.trigger(foreign_id)
    assert store.list_runs("parcels") == []
    assert wf.trigger("x" * 512)  # the longest allowed
