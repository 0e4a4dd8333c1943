"""An attempt that runs across an operator's pause and resume: its result and its failure are discarded.

The resumed run keeps its whole error budget, and its step, which could not
start while the old attempt ran, is rung as soon as that attempt ends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.unit.workflows import Status, Thing, middle
from workflow_celery import Builder, InProcessBroker, MemoryStore, Outcome, Run, RunState, SQLStore, Workflow
from workflow_celery.core.ports import RecordStore
from workflow_celery.testing import FakeClock


class PausedAndResumedWhileRunning:
    """A step whose first call sees an operator pause and resume its run, then ends as ``first`` says."""

    def __init__(self, first: Callable[[], Status]) -> None:
        self.first = first
        self.calls = 0
        self.wf: Workflow[Thing, Status] | None = None
        self.broker: InProcessBroker | None = None

    def __call__(self, run: Run[Thing, Status]) -> Status:
        self.calls += 1
        if self.calls > 1:
            return Status.MIDDLE
        assert self.wf is not None and self.broker is not None
        self.wf.pause(run.run_id, "look")
        self.wf.resume(run.run_id)
        # The resume rang the step again: a worker gets it while this attempt still runs, and must leave it.
        self.broker._deliver(self.broker._queue.get_nowait())
        assert self.broker.outcomes[-1][1] is Outcome.DROPPED_RUNNING
        return self.first()


def fails() -> Status:
    raise RuntimeError("the old attempt fails after all")


def moves() -> Status:
    return Status.MIDDLE


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> RecordStore:
    if request.param == "memory":
        return MemoryStore()
    sql = SQLStore(f"sqlite:///{tmp_path}/superseded.db")
    sql.create_schema()
    return sql


@pytest.mark.parametrize("first", [fails, moves], ids=["failing", "succeeding"])
def test_the_resumed_step_runs_at_once_with_its_whole_error_budget(
    store: RecordStore, first: Callable[[], Status]
) -> None:
    step = PausedAndResumedWhileRunning(first)
    b = Builder("superseded", Thing, Status)
    # One failure pauses the run: a counted failure of the old attempt would pause the resumed one unrun.
    b.add_step(Status.START, step, Status.MIDDLE).with_options(
        err_backoff=timedelta(seconds=10), pause_after_err_count=1
    )
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker = InProcessBroker()
    wf = b.build(broker, store, clock=FakeClock(), redeliver_after=timedelta(hours=1))
    step.wf, step.broker = wf, broker
    run_id = wf.trigger("s-1")

    broker._deliver(broker._queue.get_nowait())  # the attempt that runs across the pause and resume
    assert broker.outcomes[-1][1] is Outcome.SUPERSEDED
    assert [e for e in wf.errors(run_id) if e.count] == []
    # Rung again by the attempt that ended, not an hour later by the relay: the clock has not moved.
    assert broker.pending() == 1
    broker.drain()
    assert step.calls == 2
    record = wf.lookup(run_id)
    assert (record.run_state, record.status) == (RunState.COMPLETED, Status.END)


def test_a_run_left_paused_is_not_resumed_early_by_the_attempt_that_ended() -> None:
    def pauses(run: Run[Thing, Status]) -> Status:
        wf.pause(run.run_id, "look")
        return Status.MIDDLE

    b = Builder("left-paused", Thing, Status)
    b.add_step(Status.START, pauses, Status.MIDDLE)
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker = InProcessBroker()
    wf = b.build(broker, MemoryStore(), clock=FakeClock(), auto_resume_after=timedelta(hours=1))
    run_id = wf.trigger("p-1")
    broker.drain()
    assert broker.outcomes == [("left-paused.start", Outcome.SUPERSEDED)]
    # Its automatic resume is due in an hour, and waits for it.
    assert broker.pending() == 0 and [m.body.get("action") for m in wf.store.outbox(run_id)] == ["resume"]
    assert wf.lookup(run_id).run_state == RunState.PAUSED
