"""Prometheus metrics: the original's process counters, and the run gauges read from the store at each scrape."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from workflow_celery import Builder, MemoryStore, Run
from workflow_celery.adapters.prometheus import DatabaseCollector, PrometheusMetrics
from workflow_celery.testing import FakeClock, in_process

from .workflows import Status, Thing, chain, start

FAILS: list[str] = []


def flaky_middle(run: Run[Thing, Status]) -> Status:
    if not FAILS:
        FAILS.append(run.run_id)
        raise RuntimeError("once")
    return Status.END


def flaky() -> Builder[Thing, Status]:
    b = Builder("flaky", Thing, Status)
    b.add_step(Status.START, start, Status.MIDDLE, Status.REJECTED)
    b.add_step(Status.MIDDLE, flaky_middle, Status.END)
    return b


def test_each_doorbell_answered_is_timed_and_errors_skips_and_run_states_are_counted() -> None:
    registry = CollectorRegistry()
    FAILS.clear()
    clock = FakeClock()
    wf, broker = in_process(flaky(), clock=clock, metrics=PrometheusMetrics(registry), max_retry_countdown=timedelta(0))
    run_id = wf.trigger("a")
    broker.drain()
    [bell] = wf.store.outbox(run_id)
    clock.advance(timedelta(minutes=1))
    broker.run_until_idle()
    broker.publish([bell])  # the spent doorbell again: a late duplicate
    broker.drain()
    start_q = {"workflow_name": "flaky", "process_name": "flaky.start"}
    middle_q = {"workflow_name": "flaky", "process_name": "flaky.middle"}
    assert registry.get_sample_value("workflow_process_latency_seconds_count", start_q) == 1
    assert registry.get_sample_value("workflow_process_latency_seconds_count", middle_q) == 3
    assert registry.get_sample_value("workflow_process_error_count_total", middle_q) == 1
    assert registry.get_sample_value("workflow_process_error_count_total", start_q) is None
    assert (
        registry.get_sample_value(
            "workflow_process_skipped_events_count_total", {**middle_q, "reason": "dropped_stale"}
        )
        == 1
    )
    changes = {"workflow_name": "flaky", "previous_run_state": "INITIATED", "current_run_state": "RUNNING"}
    assert registry.get_sample_value("workflow_run_state_changes_total", changes) == 1
    done = {"workflow_name": "flaky", "previous_run_state": "RUNNING", "current_run_state": "COMPLETED"}
    assert registry.get_sample_value("workflow_run_state_changes_total", done) == 1


def test_run_gauges_are_read_from_the_store_at_each_scrape() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    store = MemoryStore()
    wf, broker = in_process(chain(), store=store, clock=clock)
    registry.register(DatabaseCollector([wf]))
    for i in range(3):
        wf.trigger(f"t-{i}")
    clock.advance(timedelta(minutes=2))
    broker.run_until_idle()
    wf.trigger("waiting")
    clock.advance(timedelta(seconds=30))

    def runs(status: str, state: str) -> float | None:
        labels = {"workflow_name": "chain", "status": status, "run_state": state}
        return registry.get_sample_value("workflow_runs", labels)

    assert runs("END", "COMPLETED") == 3 and runs("START", "INITIATED") == 1 and runs("MIDDLE", "RUNNING") == 0
    assert (
        registry.get_sample_value("workflow_oldest_run_age_seconds", {"workflow_name": "chain", "status": "START"})
        == 30
    )
    assert registry.get_sample_value("workflow_metrics_database_up", {"workflow_name": "chain"}) == 1
    broker.run_until_idle()
    assert runs("END", "COMPLETED") == 4 and runs("START", "INITIATED") == 0  # read again: no stale figure


class BrokenStore(MemoryStore):
    def runs_by_status(self, workflow_name: str) -> list[tuple[int, int, int]]:
        raise ConnectionError("the database is down")


def test_a_store_that_cannot_be_read_says_so_instead_of_failing_the_scrape() -> None:
    registry = CollectorRegistry()
    wf, _ = in_process(chain(), store=BrokenStore())
    registry.register(DatabaseCollector([wf]))
    assert registry.get_sample_value("workflow_metrics_database_up", {"workflow_name": "chain"}) == 0


class HooksOnly:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        self.seen.append(hook)


def test_a_metrics_object_of_an_older_kind_still_works() -> None:
    metrics = HooksOnly()
    wf, broker = in_process(chain(), metrics=metrics)
    wf.trigger("a")
    broker.run_until_idle()
    assert wf.lookup(wf.latest("a").run_id).status == Status.END and metrics.seen == []
