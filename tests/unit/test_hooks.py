"""Hooks: each fires exactly for its run-state change, in isolation, at least once, retried with backoff."""

from __future__ import annotations

from datetime import UTC, timedelta

from tests.unit.workflows import Status, Thing, chain
from workflow_celery import Builder, InProcessBroker, MemoryStore, Run, RunState, TypedRecord
from workflow_celery.core.answer import HookOutcome
from workflow_celery.testing import FakeClock


class Recorder:
    def __init__(self, fail_times: int = 0) -> None:
        self.seen: list[TypedRecord[Thing, Status]] = []
        self.fail_times = fail_times
        self.calls = 0

    def __call__(self, record: TypedRecord[Thing, Status]) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise RuntimeError(f"notification service down ({self.calls})")
        self.seen.append(record)


def with_hooks(builder: Builder[Thing, Status], **hooks: Recorder) -> None:
    for event, fn in hooks.items():
        getattr(builder, f"on_{event}")(fn)


def test_complete_fires_only_on_complete_with_the_record_at_that_change() -> None:
    b = chain()
    done, cancelled, paused = Recorder(), Recorder(), Recorder()
    with_hooks(b, complete=done, cancel=cancelled, pause=paused)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("h-1", initial_value=Thing(name="n"))
    broker.drain()
    assert [r.run_id for r in done.seen] == [run_id]
    rec = done.seen[0]
    assert rec.status == Status.END and rec.run_state == RunState.COMPLETED
    assert rec.object.steps == ["start", "middle"] and rec.meta.version == 3
    assert cancelled.seen == [] and paused.seen == []
    assert ("chain.hooks.completed", HookOutcome.SUCCEEDED) in broker.outcomes
    assert store.outbox() == []


def test_pause_and_cancel_fire_their_hook_from_steps_and_from_the_api() -> None:
    b = Builder("ctl", Thing, Status)
    b.add_step(Status.START, lambda run: run.pause("from step"), Status.MIDDLE)
    b.add_step(Status.MIDDLE, lambda run: run.cancel("from step"), Status.END)
    done, cancelled, paused = Recorder(), Recorder(), Recorder()
    with_hooks(b, complete=done, cancel=cancelled, pause=paused)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    p1 = wf.trigger("p-1")
    broker.drain()
    assert [(r.run_id, r.meta.run_state_reason) for r in paused.seen] == [(p1, "from step")]
    c1 = wf.trigger("c-1", start_at=Status.MIDDLE)
    broker.drain()
    assert [(r.run_id, r.meta.run_state_reason) for r in cancelled.seen] == [(c1, "from step")]
    wf.resume(p1)
    wf.pause(p1, "by hand")
    wf.cancel(p1, "api")
    broker.drain()
    assert [r.meta.run_state_reason for r in paused.seen] == ["from step", "by hand"]
    assert [r.meta.run_state_reason for r in cancelled.seen] == ["from step", "api"]
    assert done.seen == []


def test_pause_after_errors_fires_on_pause() -> None:
    def boom(run: Run[Thing, Status]) -> Status:
        raise ValueError("always")

    b = Builder("boom", Thing, Status)
    b.add_step(Status.START, boom, Status.END).with_options(pause_after_err_count=1)
    paused = Recorder()
    b.on_pause(paused)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("b-1")
    broker.drain()
    assert [r.run_id for r in paused.seen] == [run_id]
    assert paused.seen[0].meta.run_state_reason.startswith("max error retry threshold hit")


def test_failing_hook_is_retried_with_growing_delays_and_the_run_is_untouched() -> None:
    clock = FakeClock()
    b = chain()
    flaky = Recorder(fail_times=2)
    steady = Recorder()
    b.on_complete(flaky, name="flaky")
    b.on_complete(steady, name="steady")
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store, clock=clock, hook_err_backoff=timedelta(seconds=10))
    run_id = wf.trigger("h-1")
    broker.drain()
    assert len(steady.seen) == 1 and flaky.seen == []  # isolation: the other hook ran once
    before = store.lookup(run_id)
    delays = []
    for attempt in (1, 2):
        [errors] = store.hook_errors(run_id)
        assert errors.count == attempt and f"down ({attempt})" in errors.last_error.message
        assert errors.hook == "flaky" and errors.message_id == f"{run_id}.3.hook.completed.flaky"
        [pending] = [m for m in store.outbox(run_id) if m.kind == "hook"]
        [(due, queue)] = broker.scheduled  # the retry waits in the broker, as an ETA message in a Celery worker
        assert queue == "chain.hooks.completed" and pending.retries == attempt
        assert pending.due_at == due + timedelta(seconds=30)  # the database rings it if the broker loses it
        delays.append(due - clock.now())
        clock.advance(delays[-1])
        assert broker.relay() == 0  # never both: the row is not due while the broker's retry is pending
        broker.drain()
    assert delays[1] > delays[0] >= timedelta(seconds=7.5)
    assert len(flaky.seen) == 1 and len(steady.seen) == 1  # the steady hook did not run again
    assert store.lookup(run_id) == before  # hook failures never change the run
    assert store.outbox(run_id) == []
    assert store.hook_errors(run_id)[0].count == 2  # still visible after the success


def test_duplicate_hook_message_runs_the_hook_once() -> None:
    b = chain()
    done = Recorder()
    b.on_complete(done)
    broker, store = InProcessBroker(), MemoryStore()
    published: list[dict[str, object]] = []
    wf = b.build(broker, store)
    original = broker.publish

    def spy(messages):  # type: ignore[no-untyped-def]
        published.extend(dict(m.body) for m in messages if m.kind == "hook")
        original(messages)

    broker.publish = spy  # type: ignore[method-assign]
    wf.trigger("h-1")
    broker.drain()
    broker.send("chain.hooks.completed", published[0])
    broker.drain()
    assert len(done.seen) == 1
    assert broker.outcomes[-1] == ("chain.hooks.completed", HookOutcome.DROPPED_DONE)


def test_data_deleted_hook() -> None:
    b = chain()
    deleted = Recorder()
    b.on_data_deleted(deleted)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("d-1", initial_value=Thing(name="secret"))
    broker.drain()
    wf.delete_data(run_id)
    broker.drain()
    assert [r.run_state for r in deleted.seen] == [RunState.DATA_DELETED]
    assert deleted.seen[0].object.name == ""


def test_hook_alone_with_a_typed_record() -> None:
    """The seed's unit-test pattern: call the hook with a hand-made TypedRecord."""
    from datetime import datetime

    from workflow_celery import Meta

    sent: list[str] = []

    def notify(record: TypedRecord[Thing, Status]) -> None:
        if not record.object.name:
            return  # nothing to notify: no retry
        sent.append(f"{record.foreign_id}:{record.run_id}")

    now = datetime.now(UTC)
    record = TypedRecord(
        workflow_name="chain",
        foreign_id="order-123",
        run_id="run-1",
        run_state=RunState.COMPLETED,
        status=Status.END,
        object=Thing(name="x"),
        created_at=now,
        updated_at=now,
        meta=Meta(version=3),
    )
    notify(record)
    assert sent == ["order-123:run-1"]
