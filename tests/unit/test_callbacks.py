"""Callbacks: an external event moves a run waiting at a status."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

import pytest

from workflow_celery import (
    Builder,
    ConfigurationError,
    InProcessBroker,
    InvalidTransition,
    MemoryStore,
    RecordNotFound,
    Run,
    RunState,
)
from workflow_celery.testing import require, trigger_callback_on


class Signup(enum.IntEnum):
    UNKNOWN = 0
    STARTED = 1
    EMAIL_SENT = 2
    CONFIRMED = 3
    EXPIRED = 4


@dataclass
class Account:
    email: str = ""
    confirmed: bool = False
    token: str = ""


def send_email(run: Run[Account, Signup]) -> Signup:
    run.object.token = "t-123"
    return Signup.EMAIL_SENT


def confirm(run: Run[Account, Signup], payload: bytes) -> Signup:
    data = json.loads(payload)
    if data.get("token") != run.object.token:
        return run.skip()
    run.object.confirmed = True
    return Signup.CONFIRMED


def signup() -> Builder[Account, Signup]:
    b = Builder("signup", Account, Signup)
    b.add_step(Signup.STARTED, send_email, Signup.EMAIL_SENT)
    b.add_callback(Signup.EMAIL_SENT, confirm, Signup.CONFIRMED, Signup.EXPIRED)
    return b


def test_callback_moves_the_waiting_run() -> None:
    broker, store = InProcessBroker(), MemoryStore()
    wf = signup().build(broker, store)
    run_id = wf.trigger("ada@example.com", initial_value=Account(email="ada@example.com"))
    trigger_callback_on(wf, "ada@example.com", run_id, Signup.EMAIL_SENT, {"token": "t-123"})
    require(wf, "ada@example.com", Signup.CONFIRMED, Account(email="ada@example.com", confirmed=True, token="t-123"))
    assert wf.lookup(run_id).run_state == RunState.COMPLETED
    assert [h.status for h in store.history(run_id)] == [1, 2, 3]


def test_callback_that_skips_or_arrives_at_the_wrong_status_changes_nothing() -> None:
    broker, store = InProcessBroker(), MemoryStore()
    wf = signup().build(broker, store)
    run_id = wf.trigger("b@example.com")
    wf.callback("b@example.com", Signup.EMAIL_SENT, b'{"token": "t-123"}')  # not there yet: ignored
    assert wf.lookup(run_id).meta.version == 1
    broker.drain()
    wf.callback("b@example.com", Signup.EMAIL_SENT, '{"token": "wrong"}')  # the callback skips
    assert wf.lookup(run_id).status == Signup.EMAIL_SENT and wf.lookup(run_id).meta.version == 2
    wf.pause(run_id)
    wf.callback("b@example.com", Signup.EMAIL_SENT, {"token": "t-123"})  # paused: ignored
    assert wf.lookup(run_id).run_state == RunState.PAUSED


def test_callback_errors_reach_the_caller() -> None:
    def bad(run: Run[Account, Signup], payload: bytes) -> Signup:
        return Signup.STARTED

    def boom(run: Run[Account, Signup], payload: bytes) -> Signup:
        raise ValueError("payload rejected")

    b = Builder("cb", Account, Signup)
    b.add_step(Signup.STARTED, send_email, Signup.EMAIL_SENT)
    b.add_callback(Signup.EMAIL_SENT, bad, Signup.CONFIRMED)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("c")
    broker.drain()
    with pytest.raises(InvalidTransition, match="callback returned STARTED, which is not an allowed destination"):
        wf.callback("c", Signup.EMAIL_SENT, b"")
    assert wf.lookup(run_id).meta.version == 2
    with pytest.raises(RecordNotFound):
        wf.callback("nobody", Signup.EMAIL_SENT, b"")
    with pytest.raises(ConfigurationError, match="no callback is registered"):
        wf.callback("c", Signup.CONFIRMED, b"")

    b2 = Builder("cb2", Account, Signup)
    b2.add_step(Signup.STARTED, send_email, Signup.EMAIL_SENT)
    b2.add_callback(Signup.EMAIL_SENT, boom, Signup.CONFIRMED)
    wf2 = b2.build(broker, store)
    wf2.trigger("d")
    broker.drain()
    with pytest.raises(ValueError, match="payload rejected"):
        wf2.callback("d", Signup.EMAIL_SENT, b"{}")


def test_several_callbacks_are_tried_in_order_until_one_moves_the_run() -> None:
    seen: list[str] = []

    def first(run: Run[Account, Signup], payload: bytes) -> Signup:
        seen.append("first")
        return run.skip()

    def second(run: Run[Account, Signup], payload: bytes) -> Signup:
        seen.append("second")
        return Signup.EXPIRED

    def third(run: Run[Account, Signup], payload: bytes) -> Signup:
        seen.append("third")
        return Signup.CONFIRMED

    b = Builder("multi", Account, Signup)
    b.add_step(Signup.STARTED, send_email, Signup.EMAIL_SENT)
    for fn in (first, second, third):
        b.add_callback(Signup.EMAIL_SENT, fn, Signup.CONFIRMED, Signup.EXPIRED)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("m")
    broker.drain()
    wf.callback("m", Signup.EMAIL_SENT, b"x")
    assert seen == ["first", "second"]
    assert wf.lookup(run_id).status == Signup.EXPIRED


def test_each_callback_says_in_the_log_whether_it_was_applied_or_ignored(caplog: pytest.LogCaptureFixture) -> None:
    broker, store = InProcessBroker(), MemoryStore()
    wf = signup().build(broker, store)
    run_id = wf.trigger("c@example.com")
    caplog.set_level("INFO", logger="workflow_celery.core.workflow")

    def said() -> str:
        line = caplog.records[-1].getMessage()
        caplog.clear()
        return line

    prefix = f"callback at EMAIL_SENT for run {run_id} of workflow signup"
    wf.callback("c@example.com", Signup.EMAIL_SENT, {"token": "t-123"})
    assert said() == f"{prefix} ignored: the run is at STARTED"
    broker.drain()
    wf.callback("c@example.com", Signup.EMAIL_SENT, {"token": "nope"})
    assert said() == f"{prefix} applied: every callback skipped, the run stays where it is"
    wf.pause(run_id)
    wf.callback("c@example.com", Signup.EMAIL_SENT, {"token": "t-123"})
    assert said() == f"{prefix} ignored: the run is PAUSED"
    wf.resume(run_id)
    wf.callback("c@example.com", Signup.EMAIL_SENT, {"token": "t-123"})
    assert said() == f"{prefix} applied (completed)"
    wf.callback("c@example.com", Signup.EMAIL_SENT, {"token": "t-123"})  # the same webhook again
    assert said() == f"{prefix} ignored: the run is at CONFIRMED"
    assert wf.lookup(run_id).meta.version == 5
