"""Lag measured from every store: waiting runs per status, the alert, its log lines and its gauges."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.workflows import Status, Thing, middle, start
from workflow_celery import Builder, InProcessBroker, MemoryStore, RunState
from workflow_celery.adapters.prometheus import DatabaseCollector
from workflow_celery.core.lag import LagWatch, WaitingRuns, measure
from workflow_celery.testing import FakeClock

from .conftest import BACKENDS, Backend


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    found = BACKENDS[request.param](request)
    yield found
    found.close()


def lagging() -> Builder[Thing, Status]:
    b = Builder("lagging", Thing, Status)
    b.add_step(Status.START, start, Status.MIDDLE, Status.REJECTED)
    b.add_step(Status.MIDDLE, middle, Status.END).with_options(consume_lag=timedelta(minutes=5))
    return b


def test_waiting_runs_count_the_initiated_and_running_runs_per_status(backend: Backend) -> None:
    clock = FakeClock()
    broker = InProcessBroker()
    wf = lagging().build(broker, backend.store, clock=clock, lag_alert=timedelta(minutes=10))
    first = wf.trigger("a")
    clock.advance(timedelta(minutes=1))
    wf.trigger("b")
    paused = wf.trigger("c")
    wf.pause(paused)  # an operator holds it: not lag
    store = backend.store
    assert isinstance(store, WaitingRuns)
    [waiting] = store.waiting_runs("lagging", [Status.START, Status.MIDDLE])
    assert (waiting.status, waiting.count, waiting.oldest) == (Status.START, 2, wf.lookup(first).created_at)
    assert store.waiting_runs("lagging", []) == [] and store.waiting_runs("other", [Status.START]) == []
    broker.drain()  # a and b move to MIDDLE (their step there waits 5 minutes)
    clock.advance(timedelta(minutes=12))
    lags = {lag.process_name: lag for lag in measure(wf, clock.now())}
    assert lags["lagging.start"].waiting == 0 and lags["lagging.start"].seconds == 0
    middle_lag = lags["lagging.middle"]
    assert middle_lag.waiting == 2 and middle_lag.seconds == 7 * 60 and not middle_lag.alert  # 12 minutes less 5
    clock.advance(timedelta(minutes=4))
    assert [lag.alert for lag in measure(wf, clock.now())] == [False, True]
    assert wf.lookup(paused).run_state == RunState.PAUSED


def test_an_alert_is_logged_when_it_starts_and_ends_and_read_by_the_gauges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    broker = InProcessBroker()
    registry = CollectorRegistry()
    wf = lagging().build(broker, MemoryStore(), clock=clock, lag_alert=timedelta(minutes=10))
    registry.register(DatabaseCollector([wf]))
    wf.trigger("a")
    watch = LagWatch()
    caplog.set_level(logging.INFO, logger="workflow_celery.core.lag")
    clock.advance(timedelta(minutes=11))
    watch.check(wf, clock.now())
    watch.check(wf, clock.now())  # still alerting: not logged again within ten minutes
    alerts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert alerts == [
        "lag alert: 1 run(s) waiting at START of workflow lagging, the oldest for 0:11:00 (lag_alert 0:10:00)"
    ]
    labels = {"workflow_name": "lagging", "process_name": "lagging.start"}
    assert registry.get_sample_value("workflow_process_lag_seconds", labels) == 660
    assert registry.get_sample_value("workflow_process_lag_alert", labels) == 1
    broker.drain()
    watch.check(wf, clock.now())
    assert (
        caplog.records[-1].getMessage()
        == "lag alert over: START of workflow lagging, the oldest run waiting for 0:00:00"
    )
    assert registry.get_sample_value("workflow_process_lag_alert", labels) == 0
    assert registry.get_sample_value("workflow_process_lag_seconds", labels) == 0


def test_without_a_threshold_there_is_no_alert_gauge() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    wf = lagging().build(InProcessBroker(), MemoryStore(), clock=clock, lag_alert=None)
    registry.register(DatabaseCollector([wf]))
    wf.trigger("a")
    clock.advance(timedelta(days=2))
    LagWatch().check(wf, clock.now())
    labels = {"workflow_name": "lagging", "process_name": "lagging.start"}
    assert registry.get_sample_value("workflow_process_lag_seconds", labels) == 2 * 86400
    assert registry.get_sample_value("workflow_process_lag_alert", labels) is None
