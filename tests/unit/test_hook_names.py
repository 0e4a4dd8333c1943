"""Hooks are known by name: deploys that add, remove or reorder hooks lose no hook execution."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.unit.workflows import Status, Thing, chain
from workflow_celery import ConfigurationError, InProcessBroker, MemoryStore, TypedRecord, Workflow
from workflow_celery.core.answer import HookOutcome
from workflow_celery.core.doorbell import hook_doorbell_id, message_id_of
from workflow_celery.core.ports import OutboxMessage
from workflow_celery.testing import FakeClock

QUEUE = "chain.hooks.completed"


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def hook(self, label: str):  # type: ignore[no-untyped-def]
        def record(record: TypedRecord[Thing, Status]) -> None:
            self.seen.append((label, record.run_id))

        return record


def confirm(record: TypedRecord[Thing, Status]) -> None:
    return None


def test_a_hook_is_named_by_its_qualified_name_or_by_name() -> None:
    b = chain()
    b.on_complete(confirm)
    b.on_complete(lambda record: None, name="send-sms")

    @b.on_complete
    def audit(record: TypedRecord[Thing, Status]) -> None:
        return None

    @b.on_complete(name="dashboard")
    def update(record: TypedRecord[Thing, Status]) -> None:
        return None

    assert audit.__name__ == "audit" and update.__name__ == "update"  # decorators return the function
    broker, store = InProcessBroker(drop=lambda d: True), MemoryStore()
    wf = b.build(broker, store)
    assert [h.name for h in wf.definition.hooks["completed"]] == [
        "confirm",
        "send-sms",
        "test_a_hook_is_named_by_its_qualified_name_or_by_name.<locals>.audit",
        "dashboard",
    ]
    run_id = wf.trigger("n-1", start_at=Status.END)
    rows = {m.body["hook"]: m for m in store.outbox(run_id)}
    assert rows["send-sms"].id == f"{run_id}.1.hook.completed.send-sms"
    assert rows["dashboard"].id == f"{run_id}.1.hook.completed.dashboard"
    for row in rows.values():
        assert message_id_of(dict(row.body)) == row.id  # the claims keeper derives it from the message


class Notifier:
    def __call__(self, record: TypedRecord[Thing, Status]) -> None:
        return None


def test_callable_objects_are_named_by_their_class() -> None:
    b = chain()
    b.on_complete(Notifier())
    with pytest.raises(ConfigurationError, match="named 'Notifier' is already registered"):
        b.on_complete(Notifier())
    b.on_complete(Notifier(), name="second-notifier")
    with pytest.raises(ConfigurationError, match="on_cancel hook is not callable"):
        b.on_cancel(object())  # type: ignore[call-overload]  # deliberately not callable
    wf = b.build(InProcessBroker(), MemoryStore())
    assert [h.name for h in wf.definition.hooks["completed"]] == ["Notifier", "second-notifier"]


def test_two_hooks_of_one_event_may_not_share_a_name() -> None:
    b = chain()
    b.on_complete(confirm)
    with pytest.raises(ConfigurationError, match="an on_complete hook named 'confirm' is already registered"):
        b.on_complete(confirm)
    b.on_complete(lambda record: None)
    with pytest.raises(ConfigurationError, match=r"named '.*<lambda>' is already registered.*name=\.\.\."):
        b.on_complete(lambda record: None)
    b.on_complete(lambda record: None, name="second-lambda")
    with pytest.raises(ConfigurationError, match="named 'confirm' is already registered"):
        b.on_complete(lambda record: None, name="confirm")
    b.on_cancel(confirm)  # the same name on another event is another hook
    b.on_pause(confirm, name="confirm")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must be a non-empty string"),
        ("  ", "must be a non-empty string"),
        (42, "must be a non-empty string"),
        ("0:confirm", "may not contain ':'"),
        ("line\nbreak", "unprintable"),
        ("x" * 101, "101 characters long; at most 100"),
    ],
)
def test_a_hook_name_must_fit_in_a_doorbell_id(name: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        chain().on_complete(confirm, name=name)  # type: ignore[call-overload]  # deliberately wrong names


def test_a_qualified_name_too_long_for_a_name_asks_for_one() -> None:
    def hook(record: object) -> None:
        return None

    hook.__qualname__ = "q" * 150
    with pytest.raises(ConfigurationError, match=r"the qualified name of .*register it with name="):
        chain().on_complete(hook)
    chain().on_complete(hook, name="short")


def deployment(
    store: MemoryStore, clock: FakeClock, *hooks: tuple[str, Calls]
) -> tuple[Workflow[Thing, Status], InProcessBroker]:
    """The chain workflow as one deployment builds it: these ``on_complete`` hooks, on a broker of its own."""
    b = chain()
    for name, calls in hooks:
        b.on_complete(calls.hook(name), name=name)
    broker = InProcessBroker()
    return b.build(broker, store, clock=clock, hook_err_backoff=timedelta(seconds=4)), broker


def pending_hooks(store: MemoryStore) -> dict[str, OutboxMessage]:
    return {str(m.body["hook"]): m for m in store.outbox(queue=QUEUE)}


def test_reordering_hooks_keeps_each_pending_doorbell_on_its_hook() -> None:
    store, clock, calls = MemoryStore(), FakeClock(), Calls()
    old, _ = deployment(store, clock, ("email", calls), ("dashboard", calls))
    run_id = old.trigger("r-1", start_at=Status.END)  # committed by the old deployment; nothing answered yet
    _, broker = deployment(store, clock, ("audit", calls), ("dashboard", calls), ("email", calls))
    for row in pending_hooks(store).values():
        broker.send(QUEUE, dict(row.body))
    broker.drain()
    assert sorted(calls.seen) == [("dashboard", run_id), ("email", run_id)]
    assert store.outbox(run_id) == []


def test_a_worker_leaves_a_hook_it_does_not_know_to_one_that_does(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = MemoryStore(), FakeClock()
    old_calls, new_calls = Calls(), Calls()
    new, _ = deployment(store, clock, ("email", new_calls), ("sms", new_calls))  # commits, e.g. a web process
    _, old_broker = deployment(store, clock, ("email", old_calls))  # a worker not yet upgraded
    runs = [new.trigger(f"d-{i}", start_at=Status.END) for i in range(2)]
    caplog.set_level(logging.DEBUG, logger="workflow_celery.core.hooks")
    for row in store.outbox(queue=QUEUE):
        old_broker.send(QUEUE, dict(row.body))
    old_broker.drain()
    assert sorted(old_calls.seen) == sorted(("email", r) for r in runs)
    assert [o for q, o in old_broker.outcomes].count(HookOutcome.LEFT_UNKNOWN) == 2
    rows = [m for m in store.outbox(queue=QUEUE)]
    assert [m.body["hook"] for m in rows] == ["sms", "sms"]  # kept, not deleted
    for row in rows:
        assert row.claimed_until is None  # the claim was let go at once
        assert timedelta(seconds=3) <= row.due_at - clock.now() <= timedelta(seconds=4)  # hook_err_backoff, jittered
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per hook and process, not once per run
    assert "leaving completed hook 'sms' of workflow chain" in warnings[0].getMessage()
    assert "this one knows 'email'" in warnings[0].getMessage()
    assert "hooks discard --workflow chain --event completed --hook 'sms'" in warnings[0].getMessage()

    # The relay rings it again when due; the old worker gets it again and leaves it for longer.
    clock.advance(timedelta(seconds=5))
    assert old_broker.relay() == 2
    old_broker.drain()
    for row in store.outbox(queue=QUEUE):
        assert row.attempts == 1 and timedelta(seconds=6) <= row.due_at - clock.now() <= timedelta(seconds=8)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    # An upgraded worker answers it.
    _, upgraded_broker = deployment(store, clock, ("email", new_calls), ("sms", new_calls))
    for row in store.outbox(queue=QUEUE):
        upgraded_broker.send(QUEUE, dict(row.body))
    upgraded_broker.drain()
    assert sorted(new_calls.seen) == sorted(("sms", r) for r in runs)
    assert store.outbox(queue=QUEUE) == []
    assert old_calls.seen.count(("email", runs[0])) == 1  # and the old hook ran once per run


def test_an_abandoned_attempt_of_an_unknown_hook_is_still_counted() -> None:
    store, clock, calls = MemoryStore(), FakeClock(), Calls()
    new, _ = deployment(store, clock, ("sms", calls))
    run_id = new.trigger("a-1", start_at=Status.END)
    [row] = store.outbox(queue=QUEUE)
    # A worker that knew the hook claimed it and died.
    store.claim(row.id, run_id, None, "dead-worker", clock.now(), clock.now() + timedelta(seconds=1))
    clock.advance(timedelta(seconds=2))
    _, old_broker = deployment(store, clock, ("email", calls))
    old_broker.send(QUEUE, dict(row.body))
    old_broker.drain()
    assert old_broker.outcomes == [(QUEUE, HookOutcome.LEFT_UNKNOWN)]
    [errors] = store.hook_errors(run_id)
    assert errors.hook == "sms" and errors.count == 1 and errors.last_error.error_type.endswith("AttemptAbandoned")
    [left] = store.outbox(queue=QUEUE)
    assert left.retries == 1 and left.claimed_until is None
    assert calls.seen == []


def legacy_row(row: OutboxMessage, index: int, qualname: str) -> OutboxMessage:
    """``row`` as a release that labelled hooks ``{index}:{qualname}`` wrote it."""
    body = {**row.body, "hook": f"{index}:{qualname}"}
    return replace(
        row, id=hook_doorbell_id(row.run_id, int(body["version"]), "completed", f"{index}:{qualname}"), body=body
    )


def test_doorbells_written_before_hooks_had_names_still_run_their_hook() -> None:
    store, clock = MemoryStore(), FakeClock()
    sent: list[str] = []

    def send_confirmation(record: TypedRecord[Thing, Status]) -> None:
        sent.append(record.run_id)

    b = chain()
    b.on_complete(lambda record: None, name="audit")
    b.on_complete(send_confirmation)
    broker = InProcessBroker(drop=lambda delivery: delivery.queue == QUEUE)  # the rows stay unanswered
    wf = b.build(broker, store, clock=clock)
    run_id = wf.trigger("l-1", start_at=Status.END)
    rows = pending_hooks(store)
    store.delete_outbox([m.id for m in rows.values()])
    old = legacy_row(
        rows["test_doorbells_written_before_hooks_had_names_still_run_their_hook.<locals>.send_confirmation"],
        0,
        send_confirmation.__qualname__,
    )
    gone = legacy_row(rows["audit"], 1, "removed_since")
    store.insert_outbox([old, gone])
    assert old.id == f"{run_id}.1.hook.completed.0" and message_id_of(dict(old.body)) == old.id
    for row in (old, gone):
        broker.send(QUEUE, dict(row.body))
    broker.drain()
    assert sent == [run_id]  # by its function's qualified name, wherever it now is
    assert broker.outcomes == [(QUEUE, HookOutcome.SUCCEEDED), (QUEUE, HookOutcome.LEFT_UNKNOWN)]
    assert [m.id for m in store.outbox(run_id)] == [gone.id]  # an unknown old label waits, like any unknown hook
