"""The exception a workflow task hands to Celery is one Celery can take.

Celery re-raises a ``MemoryError`` in the worker's main process (the worker
stops), and writes an exception's message whole into every RETRY and FAILURE
log line, event and result. The task replaces such an exception with a
``StepError`` naming the original type and the start of its message.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import pytest
from celery.exceptions import Ignore, Reject, Retry

from workflow_celery.adapters.celery.tasks import StepError, for_celery, report
from workflow_celery.core.answer import Answer, Outcome, RetryPlan
from workflow_celery.core.failures import MAX_ERROR_MESSAGE


class Quota(BaseException):
    pass


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a step leaves it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_ordinary_exception_is_handed_over_as_it_is() -> None:
    exc = raised(ConnectionError("gateway down"))
    assert for_celery(exc) is exc


@pytest.mark.parametrize(
    "exc",
    [MemoryError("cannot allocate"), Quota("quota used"), GeneratorExit("closed"), Ignore("x"), Reject("y")],
    ids=["MemoryError", "BaseException subclass", "GeneratorExit", "Ignore", "Reject"],
)
def test_what_celery_cannot_take_is_replaced_by_a_step_error_from_it(exc: BaseException) -> None:
    original = raised(exc)
    safe = for_celery(original)
    assert type(safe) is StepError and isinstance(safe, Exception)
    assert str(safe) == f"{type(exc).__qualname__}: {exc}"
    assert safe.__cause__ is original


def test_a_message_over_the_bound_is_cut_and_not_chained() -> None:
    original = raised(ValueError("x" * 50_000_000))
    safe = for_celery(original)
    assert type(safe) is StepError
    text = str(safe)
    assert len(text) <= MAX_ERROR_MESSAGE
    assert text.startswith("ValueError: xxxx") and "characters cut]" in text
    assert safe.__cause__ is None and safe.__suppress_context__
    # What Celery formats and logs: the step's frames, never the whole message.
    formatted = "".join(traceback.format_exception(safe))
    assert len(formatted) < 10 * MAX_ERROR_MESSAGE
    assert "in raised" in formatted


def test_an_unprintable_exception_is_named() -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    original = raised(MemoryError())
    assert str(for_celery(original)) == "MemoryError"
    odd = Odd()
    assert for_celery(odd) is odd  # Celery's safe_repr copes with it


class FakeTask:
    """What ``report`` uses of a bound Celery task."""

    def __init__(self) -> None:
        self.retried: dict[str, Any] = {}

    def retry(self, **kwargs: Any) -> Retry:
        self.retried = kwargs
        return Retry(exc=kwargs["exc"], when=kwargs["countdown"])


class FakeWorkflow:
    definition: Any = None


def body() -> dict[str, Any]:
    return {"run_id": "r", "version": 1, "status": 1}


def test_the_attempt_that_pauses_a_run_fails_the_task_without_a_memory_error() -> None:
    original = raised(MemoryError("cannot allocate"))
    answer = Answer(Outcome.PAUSED_AFTER_ERRORS, "m-1", 3, error=original)
    with pytest.raises(StepError) as failed:
        report(FakeTask(), FakeWorkflow(), body(), answer)  # type: ignore[arg-type]
    assert str(failed.value) == "MemoryError: cannot allocate"
    assert failed.value.__cause__ is original


def test_a_retried_attempt_hands_celery_the_bounded_error() -> None:
    now = datetime.now(UTC)
    original = raised(ValueError("y" * 100_000))
    near = Answer(
        Outcome.RETRY_SCHEDULED,
        "m-1",
        1,
        error=original,
        retry=RetryPlan(retry_at=now, backstop_at=now, countdown=1.0),
    )
    task = FakeTask()
    with pytest.raises(Retry) as retried:
        report(task, FakeWorkflow(), body(), near)  # type: ignore[arg-type]
    assert type(task.retried["exc"]) is StepError
    assert len(str(retried.value)) < 2 * MAX_ERROR_MESSAGE
    far = Answer(near.outcome, "m-1", 1, error=raised(MemoryError("big")), retry=RetryPlan(now, now, None))
    with pytest.raises(Retry) as retried:
        report(task, FakeWorkflow(), body(), far)  # type: ignore[arg-type]
    assert type(retried.value.exc) is StepError and str(retried.value.exc) == "MemoryError: big"
