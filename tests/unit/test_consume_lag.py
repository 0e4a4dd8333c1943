"""consume_lag: a step runs a run only once it has been at the status that long; the relay rings it then."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workflow_celery import Builder, ConfigurationError
from workflow_celery.core.answer import Outcome
from workflow_celery.testing import FakeClock, in_process

from .workflows import Status, Thing, middle, start

LAG = timedelta(minutes=10)


def lagged() -> Builder[Thing, Status]:
    b = Builder("cooling-off", Thing, Status)
    b.add_step(Status.START, start, Status.MIDDLE, Status.REJECTED)
    b.add_step(Status.MIDDLE, middle, Status.END).with_options(consume_lag=LAG)
    return b


def test_a_lagged_step_runs_once_the_run_has_been_at_its_status_long_enough() -> None:
    clock = FakeClock()
    wf, broker = in_process(lagged(), clock=clock)
    run_id = wf.trigger("t-1")
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.MIDDLE  # the first step is not lagged
    [bell] = wf.store.outbox(run_id)
    assert bell.due_at == wf.lookup(run_id).updated_at + LAG
    clock.advance(LAG - timedelta(seconds=1))
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.MIDDLE
    clock.advance(timedelta(seconds=1))
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.END


def test_a_doorbell_rung_early_waits_for_its_time_without_running_the_step() -> None:
    clock = FakeClock()
    wf, broker = in_process(lagged(), clock=clock)
    run_id = wf.trigger("t-2")
    broker.run_until_idle()
    [bell] = wf.store.outbox(run_id)
    broker.publish([bell])  # rung by hand before its time
    broker.drain()
    assert ("cooling-off.middle", Outcome.WAITING_FOR_LAG) in broker.outcomes
    assert wf.lookup(run_id).status == Status.MIDDLE
    [again] = wf.store.outbox(run_id)
    assert again.due_at == wf.lookup(run_id).updated_at + LAG
    clock.advance(LAG)
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.END


def test_a_resumed_run_waits_the_lag_again_and_the_reconciler_keeps_the_lag() -> None:
    clock = FakeClock()
    wf, broker = in_process(lagged(), clock=clock)
    run_id = wf.trigger("t-3")
    broker.run_until_idle()
    wf.pause(run_id)
    clock.advance(LAG * 2)
    wf.resume(run_id)
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.MIDDLE  # the lag counts from the resume
    wf.store.delete_outbox([m.id for m in wf.store.outbox(run_id)])  # a doorbell lost by hand
    clock.advance(wf.options.redeliver_after + timedelta(seconds=1))
    assert wf.reconcile_once() == 1
    assert wf.lookup(run_id).status == Status.MIDDLE
    clock.advance(LAG)
    broker.run_until_idle()
    assert wf.lookup(run_id).status == Status.END


def test_a_negative_or_non_duration_lag_is_refused() -> None:
    b = Builder("bad-lag", Thing, Status)
    with pytest.raises(ConfigurationError, match="consume_lag must not be negative"):
        b.add_step(Status.START, start, Status.MIDDLE).with_options(consume_lag=timedelta(seconds=-1))
    with pytest.raises(ConfigurationError, match="consume_lag must be a timedelta"):
        b.add_step(Status.MIDDLE, middle, Status.END).with_options(consume_lag=600)
