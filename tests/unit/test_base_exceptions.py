"""A step raising a ``BaseException`` that is not an ``Exception`` is an ordinary failed attempt.

``class E(BaseException)``, ``GeneratorExit`` or ``asyncio.CancelledError``
raised by a step is counted at once with its own type and message, like any
other error; ``KeyboardInterrupt`` and ``SystemExit`` still stop the process.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.unit.workflows import Status, Thing, middle
from workflow_celery import Builder, InProcessBroker, MemoryStore, Outcome, Run, RunState, Workflow
from workflow_celery.core.run import RaisedBaseException, call_user
from workflow_celery.testing import FakeClock


class QuotaExhausted(BaseException):
    """Not an ``Exception``: ``except Exception`` does not catch it."""


def raises(exc: BaseException) -> Callable[[Run[Thing, Status]], Status]:
    def step(run: Run[Thing, Status]) -> Status:
        raise exc

    return step


def build(step: Callable[..., object], *, pause_after: int = 0) -> tuple[Workflow[Thing, Status], InProcessBroker]:
    b = Builder("base-exc", Thing, Status)
    b.add_step(Status.START, step, Status.MIDDLE).with_options(
        err_backoff=timedelta(seconds=10), pause_after_err_count=pause_after
    )
    b.add_step(Status.MIDDLE, middle, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    return b.build(broker, store, clock=FakeClock()), broker


@pytest.mark.parametrize(
    ("exc", "error_type", "message"),
    [
        (QuotaExhausted("monthly quota used up"), f"{__name__}.QuotaExhausted", "monthly quota used up"),
        (GeneratorExit("generator closed"), "builtins.GeneratorExit", "generator closed"),
        (asyncio.CancelledError("cancelled by the step"), "asyncio.exceptions.CancelledError", "cancelled by the step"),
    ],
    ids=["BaseException subclass", "GeneratorExit", "CancelledError"],
)
def test_a_base_exception_is_a_failed_attempt_with_its_type_and_message(
    exc: BaseException, error_type: str, message: str
) -> None:
    wf, broker = build(raises(exc))
    run_id = wf.trigger("b-1")
    broker.drain()  # before: the exception escaped the worker and the attempt waited for its claim to expire
    [errors] = wf.store.errors(run_id)
    assert errors.count == 1
    assert errors.last_error.error_type == error_type
    assert errors.last_error.message == message
    assert "AttemptAbandoned" not in errors.last_error.traceback
    assert f"{type(exc).__name__}: {message}" in errors.last_error.traceback
    assert "in step" in errors.last_error.traceback  # the step's own frame
    assert wf.lookup(run_id).run_state == RunState.INITIATED  # still to be retried
    assert len(broker.scheduled) == 1  # retried after the backoff, like any failure


def test_the_attempt_that_reaches_the_limit_pauses_the_run_with_the_message() -> None:
    wf, broker = build(raises(QuotaExhausted("monthly quota used up")), pause_after=1)
    run_id = wf.trigger("b-1")
    broker.drain()
    rec = wf.lookup(run_id)
    assert rec.run_state == RunState.PAUSED
    assert rec.meta.run_state_reason == "max error retry threshold hit: QuotaExhausted: monthly quota used up"
    assert broker.outcomes[-1] == ("base-exc.start", Outcome.PAUSED_AFTER_ERRORS)


def test_an_async_step_raising_a_base_exception_is_a_failed_attempt() -> None:
    async def step(run: Run[Thing, Status]) -> Status:
        raise QuotaExhausted("async quota")

    wf, broker = build(step)
    run_id = wf.trigger("b-1")
    broker.drain()
    [errors] = wf.store.errors(run_id)
    assert (errors.count, errors.last_error.message) == (1, "async quota")
    assert errors.last_error.error_type.endswith(".QuotaExhausted")


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"])
def test_keyboard_interrupt_and_system_exit_go_through_unchanged(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as raised:
        call_user(raises(exc), None)
    assert raised.value is exc


def test_the_stand_in_reads_as_the_original_and_survives_pickling() -> None:
    with pytest.raises(RaisedBaseException) as raised:
        call_user(raises(QuotaExhausted("a", 2)), None)
    stand_in = raised.value
    assert isinstance(stand_in, Exception)
    assert type(stand_in).__name__ == "QuotaExhausted" and type(stand_in).__module__ == __name__
    assert str(stand_in) == str(QuotaExhausted("a", 2))
    assert isinstance(stand_in.original, QuotaExhausted)
    copy = pickle.loads(pickle.dumps(stand_in))
    assert type(copy) is type(stand_in) and str(copy) == str(stand_in)


def test_ordinary_exceptions_are_not_replaced() -> None:
    error = ValueError("plain")
    with pytest.raises(ValueError) as raised:
        call_user(raises(error), None)
    assert raised.value is error
