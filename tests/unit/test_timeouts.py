"""Timeouts: due times in the database, fired by the relay, cancelled by leaving the status."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from workflow_celery import (
    Builder,
    ConfigurationError,
    InProcessBroker,
    MemoryStore,
    Run,
    RunState,
    duration_timer,
    time_timer,
)
from workflow_celery.core.answer import Outcome
from workflow_celery.testing import FakeClock, await_timeout_insert, in_process, require, trigger_callback_on


class Otp(enum.IntEnum):
    UNKNOWN = 0
    SENT = 1
    WAITING = 2
    VERIFIED = 3
    EXPIRED = 4


@dataclass
class Code:
    code: str = ""
    expired_at: str = ""


def send(run: Run[Code, Otp]) -> Otp:
    run.object.code = "4242"
    return Otp.WAITING


def expire(run: Run[Code, Otp], now: datetime) -> Otp:
    run.object.expired_at = now.isoformat()
    return Otp.EXPIRED


def verify(run: Run[Code, Otp], payload: bytes) -> Otp:
    return Otp.VERIFIED if payload.decode() == run.object.code else run.skip()


def otp(timer: Callable[[Run[Code, Otp], datetime], datetime | None] | None = None) -> Builder[Code, Otp]:
    b = Builder("otp", Code, Otp)
    b.add_step(Otp.SENT, send, Otp.WAITING)
    b.add_callback(Otp.WAITING, verify, Otp.VERIFIED)
    b.add_timeout(Otp.WAITING, timer or duration_timer(timedelta(hours=1)), expire, Otp.EXPIRED)
    return b


def test_timeout_fires_when_due_on_the_clock() -> None:
    clock = FakeClock()
    broker, store = InProcessBroker(), MemoryStore()
    wf = otp().build(broker, store, clock=clock)
    run_id = wf.trigger("user-1")
    due = await_timeout_insert(wf, "user-1", run_id, Otp.WAITING)
    assert due == clock.now() + timedelta(hours=1)
    clock.advance(timedelta(minutes=59))
    broker.relay()
    broker.drain()
    assert wf.lookup(run_id).status == Otp.WAITING
    clock.advance(timedelta(minutes=2))
    broker.relay()
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.status == Otp.EXPIRED and rec.run_state == RunState.COMPLETED
    assert rec.object.expired_at == clock.now().isoformat()
    assert ("otp.waiting", Outcome.TIMED_OUT) in broker.outcomes
    assert "otp.waiting" in wf.queues()


def test_leaving_the_status_cancels_the_timeout() -> None:
    clock = FakeClock()
    broker, store = InProcessBroker(), MemoryStore()
    wf = otp().build(broker, store, clock=clock)
    run_id = wf.trigger("user-2")
    trigger_callback_on(wf, "user-2", run_id, Otp.WAITING, "4242")
    require(wf, "user-2", Otp.VERIFIED, Code(code="4242"))
    assert store.outbox(run_id) == []
    clock.advance(timedelta(hours=2))
    assert broker.relay() == 0


REMINDERS: list[datetime] = []


def remind(run: Run[Code, Otp], now: datetime) -> Otp:
    REMINDERS.append(now)
    return run.skip()  # a reminder is sent; the run stays where it is


def test_several_timeouts_on_one_status_each_fire_once() -> None:
    clock = FakeClock()
    b = otp(duration_timer(timedelta(hours=2)))
    b.add_timeout(Otp.WAITING, duration_timer(timedelta(minutes=30)), remind, Otp.EXPIRED)
    wf, broker = in_process(b, clock=clock)
    REMINDERS.clear()
    run_id = wf.trigger("user-4")
    broker.run_until_idle()
    for _ in range(16):  # four hours, a look every 15 minutes
        clock.advance(timedelta(minutes=15))
        broker.run_until_idle()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert [start + timedelta(minutes=30)] == REMINDERS
    rec = wf.lookup(run_id)
    assert rec.status == Otp.EXPIRED and rec.object.expired_at == (start + timedelta(hours=2)).isoformat()
    assert [h.status for h in wf.history(run_id)] == [Otp.SENT, Otp.WAITING, Otp.EXPIRED]


def test_time_timer_and_a_timer_returning_none() -> None:
    clock = FakeClock()
    at = clock.now() + timedelta(days=1)
    broker, store = InProcessBroker(), MemoryStore()
    wf = otp(time_timer(at)).build(broker, store, clock=clock)
    run_id = wf.trigger("user-3")
    assert await_timeout_insert(wf, "user-3", run_id, Otp.WAITING) == at
    b = Builder("never", Code, Otp)
    b.add_step(Otp.SENT, send, Otp.WAITING)
    b.add_timeout(Otp.WAITING, lambda run, now: None, expire, Otp.EXPIRED)
    wf2 = b.build(broker, store, clock=clock)
    rid = wf2.trigger("user-4")
    broker.drain()
    assert wf2.lookup(rid).status == Otp.WAITING and store.outbox(rid) == []


def test_timer_helpers_refuse_bad_values() -> None:
    with pytest.raises(ConfigurationError):
        duration_timer(timedelta(0))
    with pytest.raises(ConfigurationError):
        time_timer(datetime(2030, 1, 1))
    assert time_timer(datetime(2030, 1, 1, tzinfo=UTC))(None, datetime.now(UTC)).year == 2030
