"""Retries with backoff, pause after N errors, run control, data deletion, the reconciler."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from tests.unit.workflows import Status, Thing, middle
from workflow_celery import (
    Builder,
    InProcessBroker,
    InvalidRunStateTransition,
    MemoryStore,
    Outcome,
    Run,
    RunState,
    Workflow,
)
from workflow_celery.core import run_actions
from workflow_celery.core.failures import backoff
from workflow_celery.core.run_state import TRANSITIONS, can_transition
from workflow_celery.testing import FakeClock


class Flaky:
    """A step that fails ``failures`` times, then moves on."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, run: Run[Thing, Status]) -> Status:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"gateway down (call {self.calls})")
        return Status.MIDDLE


def flaky_workflow(
    step: Flaky, clock: FakeClock, *, pause_after: int = 0, **options: object
) -> tuple[Workflow[Thing, Status], InProcessBroker, MemoryStore]:
    b = Builder("flaky", Thing, Status)
    b.add_step(Status.START, step, Status.MIDDLE).with_options(
        err_backoff=timedelta(seconds=10), pause_after_err_count=pause_after
    )
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store, clock=clock, **options)
    return wf, broker, store


def advance_to_next_retry(clock: FakeClock, broker: InProcessBroker) -> timedelta:
    """Move the clock to the retry the broker holds (a Celery worker holds it as an ETA message)."""
    [(due, _queue)] = broker.scheduled
    wait = due - clock.now()
    clock.advance(wait)
    return wait


def test_failing_twice_then_succeeding_completes_with_growing_delays() -> None:
    clock = FakeClock()
    step = Flaky(2)
    wf, broker, store = flaky_workflow(step, clock)
    run_id = wf.trigger("f-1")
    broker.drain()
    [errors] = store.errors(run_id)
    assert errors.count == 1 and "call 1" in errors.last_error.message
    assert errors.last_error.error_type == "builtins.ConnectionError"
    assert "ConnectionError" in errors.last_error.traceback
    [retry] = store.outbox(run_id)
    assert retry.retries == 1  # the database keeps the retry too, due a little after the broker's
    first = advance_to_next_retry(clock, broker)
    assert retry.due_at == clock.now() + timedelta(seconds=30)
    broker.relay()
    broker.drain()
    assert store.errors(run_id)[0].count == 2
    second = advance_to_next_retry(clock, broker)
    assert timedelta(seconds=7.5) <= first <= timedelta(seconds=10)
    assert timedelta(seconds=15) <= second <= timedelta(seconds=20)
    assert second > first
    broker.relay()
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.COMPLETED and step.calls == 3
    assert store.errors(run_id) == []  # reset when the run left the status


def test_backoff_is_capped() -> None:
    clock = FakeClock()
    wf, _, _ = flaky_workflow(Flaky(0), clock, max_backoff=timedelta(seconds=60))
    base, cap, _ = wf.failures.options_at(Status.START)
    assert (base, cap) == (timedelta(seconds=10), timedelta(seconds=60))  # the step's err_backoff, the build's cap
    delays = [backoff(base, cap, n) for n in range(1, 12)]
    assert all(d <= timedelta(seconds=60) for d in delays)
    assert delays[-1] >= timedelta(seconds=45)
    assert [backoff(base, cap, n, jitter=False) for n in (1, 2, 3, 4, 100)] == [
        timedelta(seconds=s) for s in (10, 20, 40, 60, 60)
    ]


def test_retry_is_not_published_before_it_is_due() -> None:
    clock = FakeClock()
    wf, broker, _store = flaky_workflow(Flaky(5), clock)
    run_id = wf.trigger("f-1")
    broker.drain()
    clock.advance(timedelta(seconds=5))
    assert broker.relay() == 0
    assert wf.lookup(run_id).status == Status.START


def test_pause_after_n_errors_then_resume_and_succeed() -> None:
    clock = FakeClock()
    step = Flaky(3)
    wf, broker, store = flaky_workflow(step, clock, pause_after=3)
    run_id = wf.trigger("f-1")
    broker.drain()
    for _ in range(2):
        advance_to_next_retry(clock, broker)
        broker.relay()
        broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.PAUSED
    assert rec.meta.run_state_reason.startswith("max error retry threshold hit")
    assert "gateway down (call 3)" in rec.meta.run_state_reason
    [errors] = store.errors(run_id)
    assert errors.count == 3 and "call 3" in errors.last_error.message
    assert broker.outcomes[-1] == ("flaky.start", Outcome.PAUSED_AFTER_ERRORS)
    # nothing runs while paused, however long we wait for retries
    clock.advance(timedelta(minutes=30))
    broker.relay()
    broker.drain()
    assert step.calls == 3
    wf.resume(run_id)
    assert store.errors(run_id)[0].count == 0  # a resumed run gets its attempts back
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.COMPLETED
    assert step.calls == 4


def test_paused_runs_resume_automatically_after_the_delay() -> None:
    clock = FakeClock()
    step = Flaky(1)
    wf, broker, _store = flaky_workflow(step, clock, pause_after=1, auto_resume_after=timedelta(hours=1))
    run_id = wf.trigger("f-1")
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.PAUSED
    clock.advance(timedelta(minutes=59))
    broker.relay()
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.PAUSED
    clock.advance(timedelta(minutes=2))
    broker.relay()
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.COMPLETED
    assert ("flaky.start", Outcome.RESUMED) in broker.outcomes


def test_auto_resume_can_be_disabled() -> None:
    clock = FakeClock()
    wf, broker, store = flaky_workflow(Flaky(1), clock, pause_after=1, auto_resume_after=None)
    run_id = wf.trigger("f-1")
    broker.drain()
    clock.advance(timedelta(days=30))
    broker.relay()
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.PAUSED
    assert store.outbox(run_id) == []


def test_manual_resume_supersedes_the_auto_resume() -> None:
    clock = FakeClock()
    wf, broker, store = flaky_workflow(Flaky(1), clock, pause_after=1)
    run_id = wf.trigger("f-1")
    broker.drain()
    assert len(store.outbox(run_id)) == 1
    wf.resume(run_id)
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.COMPLETED
    assert store.outbox(run_id) == []


def test_step_finishing_after_pause_does_not_overwrite_it() -> None:
    clock = FakeClock()
    holder: dict[str, Workflow[Thing, Status]] = {}

    def slow(run: Run[Thing, Status]) -> Status:
        holder["wf"].pause(run.run_id, "operator")  # happens while the step runs
        return Status.MIDDLE

    b = Builder("race", Thing, Status)
    b.add_step(Status.START, slow, Status.MIDDLE)
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = holder["wf"] = b.build(broker, store, clock=clock)
    run_id = wf.trigger("r-1")
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.PAUSED and rec.status == Status.START
    assert rec.meta.run_state_reason == "operator"
    assert ("race.start", Outcome.SUPERSEDED) in broker.outcomes


def test_cancel_is_a_database_state() -> None:
    clock = FakeClock()
    wf, broker, _store = flaky_workflow(Flaky(0), clock)
    run_id = wf.trigger("c-1")
    # As in the original table: a run that has not started can be paused, not cancelled; the error says so.
    with pytest.raises(InvalidRunStateTransition, match="INITIATED to CANCELLED: a run that is INITIATED can only"):
        wf.cancel(run_id)
    broker._deliver(broker._queue.get_nowait())  # START -> MIDDLE: the run is running
    wf.cancel(run_id, "customer changed their mind")
    broker.drain()  # the already published message finds a cancelled run
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.CANCELLED and rec.status == Status.MIDDLE
    assert rec.meta.run_state_reason == "customer changed their mind"
    assert broker.outcomes == [("flaky.start", Outcome.MOVED), ("flaky.middle", Outcome.DROPPED_STALE)]
    assert wf.trigger("c-1")  # a cancelled run no longer blocks the foreign id


def states_reachable(clock: FakeClock) -> dict[RunState, tuple[Workflow[Thing, Status], str]]:
    """One run in each run state."""
    out: dict[RunState, tuple[Workflow[Thing, Status], str]] = {}
    wf, broker, _ = flaky_workflow(Flaky(0), clock)
    ids = itertools.count()

    def lose_messages() -> None:
        broker._drop = lambda d: True

    def deliver_messages() -> None:
        broker._drop = None

    lose_messages()

    def new() -> str:
        return wf.trigger(f"s-{next(ids)}")

    out[RunState.INITIATED] = (wf, new())
    running = new()
    wf.store.update_run(
        wf.transitions.next_record(wf.store.lookup(running), run_state=RunState.RUNNING, now=clock.now()), 1, []
    )
    out[RunState.RUNNING] = (wf, running)
    paused = new()
    wf.pause(paused)
    out[RunState.PAUSED] = (wf, paused)
    cancelled = new()
    wf.pause(cancelled)
    wf.cancel(cancelled)
    out[RunState.CANCELLED] = (wf, cancelled)
    deliver_messages()
    completed = wf.trigger("s-done")
    broker.drain()
    lose_messages()
    out[RunState.COMPLETED] = (wf, completed)
    requested = new()
    wf.pause(requested)
    wf.cancel(requested)
    wf.delete_data(requested)
    out[RunState.REQUESTED_DATA_DELETED] = (wf, requested)
    deleted = new()
    wf.pause(deleted)
    wf.cancel(deleted)
    deliver_messages()
    wf.delete_data(deleted)
    broker.drain()
    out[RunState.DATA_DELETED] = (wf, deleted)
    for state, (w, rid) in out.items():
        assert w.lookup(rid).run_state == state, state
    return out


API = {
    RunState.PAUSED: lambda wf, rid: wf.pause(rid, "x"),
    RunState.RUNNING: lambda wf, rid: wf.resume(rid),
    RunState.CANCELLED: lambda wf, rid: wf.cancel(rid, "x"),
    RunState.REQUESTED_DATA_DELETED: lambda wf, rid: wf.delete_data(rid, "x"),
}


def test_the_transition_table() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert allowed == {
        (RunState.INITIATED, RunState.RUNNING),
        (RunState.INITIATED, RunState.PAUSED),
        (RunState.RUNNING, RunState.PAUSED),
        (RunState.RUNNING, RunState.CANCELLED),
        (RunState.RUNNING, RunState.COMPLETED),
        (RunState.PAUSED, RunState.RUNNING),
        (RunState.PAUSED, RunState.CANCELLED),
        (RunState.COMPLETED, RunState.REQUESTED_DATA_DELETED),
        (RunState.CANCELLED, RunState.REQUESTED_DATA_DELETED),
        (RunState.REQUESTED_DATA_DELETED, RunState.DATA_DELETED),
        (RunState.DATA_DELETED, RunState.REQUESTED_DATA_DELETED),
    }
    assert sum(not can_transition(a, b) for a in RunState for b in RunState) == 49 - 11


def test_only_a_paused_run_is_resumed_by_hand() -> None:
    """A just-started run reaches RUNNING through its own step; a resume would skip its retry's backoff."""
    assert can_transition(RunState.INITIATED, RunState.RUNNING)
    assert not can_transition(RunState.INITIATED, RunState.RUNNING, by_hand=True)
    assert [s for s in RunState if can_transition(s, RunState.RUNNING, by_hand=True)] == [RunState.PAUSED]
    clock = FakeClock()
    wf, broker, _store = flaky_workflow(Flaky(1), clock)
    run_id = wf.trigger("r-1")
    broker._deliver(broker._queue.get_nowait())  # the first attempt fails: the next one waits for the backoff
    with pytest.raises(InvalidRunStateTransition, match="from INITIATED to RUNNING: only a PAUSED run can be resumed"):
        wf.resume(run_id)
    assert wf.lookup(run_id).run_state == RunState.INITIATED
    assert "resume" not in run_actions.allowed(RunState.INITIATED)
    wf.pause(run_id, "look")
    with pytest.raises(InvalidRunStateTransition, match="from PAUSED to PAUSED: the run is PAUSED already"):
        wf.pause(run_id, "again")
    assert run_actions.allowed(RunState.PAUSED) == ["resume", "cancel"]


@pytest.mark.parametrize("current", list(RunState))
@pytest.mark.parametrize("target", list(API))
def test_every_run_state_change_through_the_api(current: RunState, target: RunState) -> None:
    clock = FakeClock()
    wf, run_id = states_reachable(clock)[current]
    before = wf.store.lookup(run_id)
    history = wf.store.history(run_id)
    if can_transition(current, target, by_hand=True):
        API[target](wf, run_id)
        assert wf.store.lookup(run_id).run_state == target
        return
    with pytest.raises(InvalidRunStateTransition) as err:
        API[target](wf, run_id)
    assert current.name in str(err.value) and target.name in str(err.value)
    assert run_id in str(err.value) and "flaky" in str(err.value)
    assert wf.store.lookup(run_id) == before
    assert wf.store.history(run_id) == history


def test_delete_data_scrubs_the_object_and_history() -> None:
    clock = FakeClock()
    wf, broker, store = flaky_workflow(Flaky(0), clock)
    run_id = wf.trigger("d-1", initial_value=Thing(name="Ada Lovelace"))
    broker.drain()
    assert any(b"Ada" in h.object for h in store.history(run_id))
    wf.delete_data(run_id, "gdpr request 7")
    assert wf.lookup(run_id).run_state == RunState.REQUESTED_DATA_DELETED
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.DATA_DELETED
    assert rec.object == Thing() and rec.meta.run_state_reason == "gdpr request 7"
    assert not any(b"Ada" in h.object for h in store.history(run_id))


def test_custom_delete() -> None:
    clock = FakeClock()

    def redact(thing: Thing) -> Thing:
        thing.name = "redacted"
        return thing

    wf, broker, store = flaky_workflow(Flaky(0), clock, custom_delete=redact)
    run_id = wf.trigger("d-1", initial_value=Thing(name="Ada", count=7))
    broker.drain()
    wf.delete_data(run_id)
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.object == Thing(name="redacted", steps=["middle"], count=7)
    assert all(b"Ada" not in h.object for h in store.history(run_id))


def test_reconciler_rings_runs_that_lost_their_doorbell() -> None:
    clock = FakeClock()
    wf, broker, store = flaky_workflow(Flaky(0), clock, redeliver_after=timedelta(seconds=30))
    broker._drop = lambda d: True  # the broker loses everything
    run_id = wf.trigger("lost")
    store.delete_outbox([m.id for m in store.outbox(run_id)])  # and the doorbell row is gone too
    assert wf.reconcile_once() == 0  # too recent to call stranded
    clock.advance(timedelta(seconds=31))
    broker._drop = None
    assert wf.reconcile_once() == 1
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.COMPLETED


def test_a_step_longer_than_redeliver_after_runs_once() -> None:
    import threading
    import time

    calls: list[float] = []
    lock = threading.Lock()

    def slow(run: Run[Thing, Status]) -> Status:
        with lock:
            calls.append(time.monotonic())
        time.sleep(2.0)  # four times redeliver_after
        return Status.MIDDLE

    b = Builder("slow", Thing, Status)
    b.add_step(Status.START, slow, Status.MIDDLE)
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store, redeliver_after=timedelta(seconds=0.5), relay_interval=timedelta(seconds=0.1))
    broker.start(workers=2)
    try:
        run_id = wf.trigger("s-1")
        wf.await_status("s-1", run_id, Status.END, timeout=10)
    finally:
        broker.stop()
    assert len(calls) == 1  # the lease kept the relay from ringing the running step's doorbell again


def test_step_options_have_types_checked() -> None:
    from workflow_celery import ConfigurationError

    b = Builder("typed", Thing, Status)
    handle = b.add_step(Status.START, lambda run: Status.END, Status.END)
    with pytest.raises(ConfigurationError, match="err_backoff must be a timedelta"):
        handle.with_options(err_backoff=3)
    with pytest.raises(ConfigurationError, match="parallel_count must be an int"):
        handle.with_options(parallel_count="4")
