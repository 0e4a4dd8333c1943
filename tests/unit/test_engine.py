from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from tests.unit.workflows import Status, Thing, chain, middle, start
from workflow_celery import (
    Builder,
    ConfigurationError,
    InProcessBroker,
    MemoryStore,
    Outcome,
    RecordNotFound,
    Run,
    RunState,
    SerializationError,
    Workflow,
    WorkflowInProgress,
)


def build(
    builder: Builder[Thing, Status] | None = None,
) -> tuple[InProcessBroker, MemoryStore, Workflow[Thing, Status]]:
    broker = InProcessBroker()
    store = MemoryStore()
    wf = (builder or chain()).build(broker, store)
    return broker, store, wf


def test_run_moves_through_every_status_and_completes() -> None:
    broker, store, wf = build()
    run_id = wf.trigger("t-1", initial_value=Thing(name="a"))
    assert wf.lookup(run_id).run_state == RunState.INITIATED
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.status == Status.END
    assert rec.run_state == RunState.COMPLETED
    assert rec.object.steps == ["start", "middle"]
    assert rec.meta.version == 3
    history = store.history(run_id)
    assert [h.version for h in history] == [1, 2, 3]
    assert [h.status for h in history] == [Status.START, Status.MIDDLE, Status.END]
    assert [h.run_state for h in history] == [RunState.INITIATED, RunState.RUNNING, RunState.COMPLETED]
    assert store.outbox() == []


def test_duplicate_message_moves_the_run_once() -> None:
    broker, store, wf = build()
    run_id = wf.trigger("t-1")
    body = {"workflow": "chain", "run_id": run_id, "status": int(Status.START), "version": 1}
    for _ in range(4):
        broker.send("chain.start", dict(body))
    broker.drain()
    history = store.history(run_id)
    assert [h.version for h in history] == [1, 2, 3]
    outcomes = [o for q, o in broker.outcomes if q == "chain.start"]
    assert outcomes.count(Outcome.MOVED) == 1
    assert outcomes.count(Outcome.DROPPED_STALE) == 4


def test_stale_message_is_dropped_and_record_unchanged() -> None:
    broker, store, wf = build()
    run_id = wf.trigger("t-1")
    broker.drain()
    before = store.lookup(run_id)
    broker.send("chain.middle", {"workflow": "chain", "run_id": run_id, "status": 2, "version": 2})
    broker.drain()
    assert store.lookup(run_id) == before
    assert broker.outcomes[-1] == ("chain.middle", Outcome.DROPPED_STALE)


@pytest.mark.parametrize(
    "body",
    [
        "not an object",
        {"workflow": "other", "run_id": "x", "status": 1, "version": 1},
        {"workflow": "chain", "status": 1, "version": 1},
        {"workflow": "chain", "run_id": "x", "status": 2, "version": 1},
        {"workflow": "chain", "run_id": "x", "status": 1, "version": "1"},
        {"workflow": "chain", "run_id": "x", "status": 1, "version": 0},
        # Beyond the stores' 32-bit columns: dropped as bad input, not a database error.
        {"workflow": "chain", "run_id": "x", "status": 1, "version": 10**30},
        {"workflow": "chain", "run_id": "x", "status": 1, "version": 1, "attempt": 2**31},
        {"workflow": "chain", "run_id": "x", "status": 1, "version": 1, "timeout": 2**40},
    ],
)
def test_malformed_or_foreign_messages_are_dropped(body: object, caplog: pytest.LogCaptureFixture) -> None:
    broker, store = InProcessBroker(drop=lambda d: True), MemoryStore()  # keep only the forged message
    wf = chain().build(broker, store)
    run_id = wf.trigger("t-1")
    before = store.lookup(run_id)
    broker.send("chain.start", body)
    broker.drain()
    assert broker.outcomes == [("chain.start", Outcome.DROPPED_INVALID)]
    assert store.lookup(run_id) == before
    assert "chain" in caplog.text


def test_unknown_run_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    broker, _store, _wf = build()
    broker.send("chain.start", {"workflow": "chain", "run_id": "nope", "status": 1, "version": 1})
    broker.drain()
    assert broker.outcomes == [("chain.start", Outcome.DROPPED_UNKNOWN_RUN)]
    assert "unknown run nope of workflow chain" in caplog.text


def test_trigger_in_progress_is_refused_until_the_run_finishes() -> None:
    broker, _store, wf = build()
    first = wf.trigger("t-1")
    with pytest.raises(WorkflowInProgress) as err:
        wf.trigger("t-1")
    assert "chain" in str(err.value) and "t-1" in str(err.value)
    broker.drain()
    second = wf.trigger("t-1")
    assert second != first
    assert wf.latest("t-1").run_id == second


def test_concurrent_triggers_only_one_wins() -> None:
    _broker, _store, wf = build()
    results: list[str] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            results.append(wf.trigger("same"))
        except WorkflowInProgress as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 7


def test_start_at_unknown_status_is_a_configuration_error() -> None:
    _broker, store, wf = build()
    with pytest.raises(ConfigurationError) as err:
        wf.trigger("t-1", start_at=Status.UNKNOWN)
    assert "chain" in str(err.value) and "UNKNOWN" in str(err.value)
    assert store.list_runs(None) == []


def test_start_at_middle_status() -> None:
    broker, _store, wf = build()
    run_id = wf.trigger("t-1", start_at=Status.MIDDLE)
    broker.drain()
    assert wf.lookup(run_id).object.steps == ["middle"]


def test_object_that_is_not_json_serialisable_is_refused() -> None:
    @dataclass
    class Holder:
        value: object = None

    b = Builder("holder", Holder, Status)
    b.add_step(Status.START, lambda run: Status.END, Status.END)
    wf = b.build(InProcessBroker(), MemoryStore())
    with pytest.raises(SerializationError) as err:
        wf.trigger("h-1", initial_value=Holder(value=object()))
    assert "holder" in str(err.value) and "h-1" in str(err.value)
    with pytest.raises(SerializationError):
        wf.trigger("h-2", initial_value="not a holder")  # type: ignore[arg-type]


def test_step_returning_a_status_it_may_not_go_to_is_a_failed_attempt() -> None:
    b = Builder("bad", Thing, Status)
    b.add_step(Status.START, lambda run: Status.REJECTED, Status.MIDDLE).with_options(pause_after_err_count=2)
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("b-1")
    broker.drain()
    errs = store.errors(run_id)
    assert errs[0].count == 1
    assert "REJECTED" in errs[0].last_error.message and "START" in errs[0].last_error.message
    assert errs[0].last_error.error_type.endswith("InvalidTransition")
    assert wf.lookup(run_id).status == Status.START
    # the retry is a due doorbell in the store, not a message in the broker
    assert broker.pending() == 0
    [retry] = store.outbox(run_id)
    assert retry.due_at > retry.created_at


def test_skip_leaves_the_run_where_it_is() -> None:
    b = Builder("skipper", Thing, Status)
    b.add_step(Status.START, lambda run: run.skip(), Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("s-1")
    broker.drain()
    assert broker.outcomes == [("skipper.start", Outcome.SKIPPED)]
    assert wf.lookup(run_id).meta.version == 1


def test_save_and_repeat_saves_progress_and_runs_again() -> None:
    def count(run: Run[Thing, Status]) -> Status:
        run.object.count += 1
        if run.object.count < 100:
            return run.save_and_repeat()
        return Status.END

    b = Builder("counter", Thing, Status)
    b.add_step(Status.START, count, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("c-1")
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.object.count == 100 and rec.status == Status.END
    assert len(store.history(run_id)) == 101


def test_pause_and_cancel_from_a_step() -> None:
    b = Builder("ctl", Thing, Status)
    b.add_step(Status.START, lambda run: run.pause("needs a human"), Status.MIDDLE)
    b.add_step(Status.MIDDLE, lambda run: run.cancel("not wanted"), Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("p-1")
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.PAUSED and rec.meta.run_state_reason == "needs a human"
    cancelled = wf.trigger("p-2", start_at=Status.MIDDLE)
    broker.drain()
    rec2 = wf.lookup(cancelled)
    assert rec2.run_state == RunState.CANCELLED and rec2.meta.run_state_reason == "not wanted"


def test_async_steps_run_to_completion() -> None:
    async def astart(run: Run[Thing, Status]) -> Status:
        run.object.steps.append("async")
        return Status.END

    b = Builder("async-wf", Thing, Status)
    b.add_step(Status.START, astart, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("a-1")
    broker.drain()
    assert wf.lookup(run_id).object.steps == ["async"]


def test_await_status_returns_for_a_status_already_passed() -> None:
    broker, _store, wf = build()
    run_id = wf.trigger("t-1", initial_value=Thing(name="n"))
    broker.drain()
    run = wf.await_status("t-1", run_id, Status.MIDDLE, timeout=1)
    assert run.status == Status.MIDDLE
    assert run.object.steps == ["start"]
    assert run.meta.version == 2


def test_await_status_times_out_with_a_clear_error() -> None:
    from workflow_celery import AwaitTimeout

    _broker, _store, wf = build()
    run_id = wf.trigger("t-1")
    with pytest.raises(AwaitTimeout) as err:
        wf.await_status("t-1", run_id, Status.END, timeout=0.05)
    assert isinstance(err.value, TimeoutError)
    assert run_id in str(err.value) and "END" in str(err.value)


def test_await_status_unknown_run() -> None:
    _broker, _store, wf = build()
    with pytest.raises(RecordNotFound):
        wf.await_status("t-1", "missing", Status.END, timeout=0.05)


def test_lookup_latest_and_list() -> None:
    broker, _store, wf = build()
    ids = [wf.trigger(f"t-{i}") for i in range(5)]
    broker.drain()
    assert wf.lookup(ids[0]).foreign_id == "t-0"
    assert wf.latest("t-3").run_id == ids[3]
    with pytest.raises(RecordNotFound):
        wf.latest("nobody")
    assert [r.run_id for r in wf.list(limit=2)] == [ids[4], ids[3]]
    assert [r.run_id for r in wf.list(limit=2, offset=1, order="asc")] == [ids[1], ids[2]]
    assert len(wf.list(status=Status.END)) == 5
    assert len(wf.list(run_state=RunState.COMPLETED)) == 5
    assert [r.run_id for r in wf.list(foreign_id="t-2")] == [ids[2]]


def test_lost_message_is_rung_again_by_the_relay() -> None:
    from datetime import timedelta

    from workflow_celery.adapters.inprocess import Delivery
    from workflow_celery.testing import FakeClock

    clock = FakeClock()
    dropped: list[Delivery] = []

    def lose_the_first(delivery: Delivery) -> bool:
        if dropped:
            return False
        dropped.append(delivery)
        return True

    broker = InProcessBroker(drop=lose_the_first)
    store = MemoryStore()
    wf = chain().build(broker, store, clock=clock, redeliver_after=timedelta(seconds=30))
    run_id = wf.trigger("t-1")
    broker.drain()
    assert wf.lookup(run_id).status == Status.START
    assert broker.relay() == 0  # not due yet
    clock.advance(timedelta(seconds=31))
    assert broker.relay() == 1
    broker.drain()
    assert wf.lookup(run_id).run_state == RunState.COMPLETED
    assert [h.version for h in store.history(run_id)] == [1, 2, 3]


def test_visualise_is_mermaid() -> None:
    _, _, wf = build()
    text = wf.visualise()
    assert text.startswith("---\ntitle: Workflow diagram of chain")
    assert "stateDiagram-v2" in text
    assert "\tstate 1_branching <<choice>>" in text and "\t1_branching --> 4" in text
    assert "\t2 --> 3" in text


def test_step_functions_are_plain_functions() -> None:
    assert start.__name__ == "start" and middle.__name__ == "middle"


def test_parallel_count_limits_concurrent_executions_of_a_step() -> None:
    import time
    from datetime import timedelta

    running = 0
    peak = 0
    lock = threading.Lock()

    def busy(run: Run[Thing, Status]) -> Status:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.15)
        with lock:
            running -= 1
        return Status.MIDDLE

    b = Builder("limited", Thing, Status)
    b.add_step(Status.START, busy, Status.MIDDLE).with_options(parallel_count=2)
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store, relay_interval=timedelta(seconds=0.1))
    broker.start(workers=6)
    try:
        ids = [wf.trigger(f"l-{i}") for i in range(8)]
        for i, run_id in enumerate(ids):
            wf.await_status(f"l-{i}", run_id, Status.END, timeout=30)
    finally:
        broker.stop()
    assert peak == 2
    assert any(o == Outcome.WAITING_FOR_SLOT for _, o in broker.outcomes)
    assert all(len(store.history(r)) == 3 for r in ids)
