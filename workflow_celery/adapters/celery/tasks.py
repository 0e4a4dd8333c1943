"""One Celery task per queue of a workflow, and how an answer becomes the task's state.

Each attempt at a doorbell's work is one Celery task (``{doorbell}-attempt-{n}``),
so Flower shows every attempt: a failed attempt that will be retried ends as
``RETRY`` with its exception, the attempt that pauses a run as ``FAILURE``.
Near retries are Celery's own (``Task.retry`` with a countdown, listed by
``celery inspect scheduled``); far ones wait in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry

from ...core.answer import Answer, Outcome
from ...core.definition import Definition
from ...core.doorbell import describe_task, task_id, with_attempt
from ...core.errors import ConfigurationError
from ...core.failures import MAX_ERROR_MESSAGE
from ...core.options import WorkflowOptions
from ...core.ports import Clock, RecordStore
from ...core.text import storable_text
from ...core.workflow import Workflow
from .dispatcher import dispatcher_for
from .registry import registry


def attach_to_celery(
    app: Celery, definition: Definition[Any, Any], store: RecordStore, clock: Clock, options: WorkflowOptions
) -> Workflow[Any, Any]:
    if not isinstance(app, Celery):
        raise ConfigurationError(
            f"build() needs a Celery app or an InProcessBroker, got {type(app).__name__}", workflow=definition.name
        )
    reg = registry(app)
    if definition.name in reg:
        raise ConfigurationError(
            "a workflow with this name is already built on this Celery app", workflow=definition.name
        )
    wf: Workflow[Any, Any] = Workflow(definition, store, dispatcher_for(app, options.publish_timeout), clock, options)
    for queue_name, handler in wf.routes().items():
        _register_task(app, wf, queue_name, _task_doc(definition, queue_name), handler)
    reg[definition.name] = wf
    return wf


def _task_doc(definition: Definition[Any, Any], queue: str) -> str:
    """A task's docstring, shown by ``celery inspect registered`` and Flower's task page."""
    if queue == definition.delete_queue():
        return f"Data deletion of workflow {definition.name}."
    for status, name in definition.step_queues().items():
        if name == queue:
            return f"Step {definition.status_name(status)} of workflow {definition.name}."
    return f"{queue.rsplit('.', 1)[-1]} hooks of workflow {definition.name}."


def _register_task(
    app: Celery, wf: Workflow[Any, Any], queue_name: str, doc: str, handler: Callable[[Any], Answer]
) -> None:
    def task(self: Task, *args: Any, **kwargs: Any) -> str:
        # Our messages carry keyword arguments; anything else is handed over as is, to be rejected with a log line.
        body: Any = kwargs if not args else (args[0] if len(args) == 1 and not kwargs else list(args))
        return report(self, wf, body, handler(body))

    task.__name__ = queue_name.replace("-", "_").replace(".", "__")
    task.__doc__ = doc
    app.task(
        bind=True,
        name=queue_name,
        queue=queue_name,
        acks_late=True,
        # A pool process that dies takes its claim with it; the relay rings the doorbell again and the next
        # attempt counts the lost one. Redelivering the message as well would be a second, unbounded path.
        reject_on_worker_lost=False,
        # The database counts attempts and pauses the run; Celery must never give up on its own.
        max_retries=None,
        ignore_result=True,
        typing=False,
        serializer="json",
    )(task)


def report(task: Task, wf: Workflow[Any, Any], body: Any, answer: Answer) -> str:
    """Turn an answer into the task's state: RETRY for a retried attempt, FAILURE for the one that paused the run.

    A near retry goes through ``Task.retry`` (a new task for the next attempt,
    due after the countdown); a far one only tells Celery the attempt is being
    retried, while its due time waits in the database for the relay. The
    exception Celery is given is the step's own, or a :class:`StepError` in its
    place when Celery could not take it as it is (see :func:`for_celery`).
    """
    if answer.error is not None and answer.retry is not None:
        error = for_celery(answer.error)
        # Raised "from" the failure, so the traceback Flower shows starts with the step's own frames.
        if answer.retry.countdown is not None and answer.message_id is not None:
            following = answer.attempt + 1
            retry = task.retry(
                kwargs=with_attempt(body, following),
                exc=error,
                countdown=answer.retry.countdown,
                throw=False,
                task_id=task_id(answer.message_id, following),
                kwargsrepr=describe_task(wf.definition, body, following),
            )
            raise retry from error
        raise Retry(exc=error, when=answer.retry.retry_at) from error
    if answer.error is not None and answer.outcome is Outcome.PAUSED_AFTER_ERRORS:
        raise for_celery(answer.error)
    return str(answer.outcome.value)


class StepError(Exception):
    """A failed attempt's exception that Celery could not be given as it is: its type's name, then its message.

    Celery re-raises a ``MemoryError`` in the worker's main process, which
    stops the worker; lets a ``BaseException`` that is not an ``Exception`` out
    of the pool process; treats its own ``Ignore``, ``Reject`` and ``Retry``
    as orders rather than failures; and writes a message whole into every log
    line, event and result. The attempt was counted with the original; the
    task fails (or is retried) with this one, whose message is at most
    ``MAX_ERROR_MESSAGE`` characters.
    """


def for_celery(exc: BaseException) -> BaseException:
    """``exc`` when Celery can be given it as the task's failure, else a :class:`StepError` naming it.

    The replacement is raised ``from`` the original, unless the original's own
    message is too long to be written out; then it carries the original's
    traceback, so the step's frames are still shown.
    """
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__qualname__} object>"
    too_long = len(message) > MAX_ERROR_MESSAGE
    unsafe = isinstance(exc, MemoryError | Ignore | Reject | Retry) or not isinstance(exc, Exception)
    if not (unsafe or too_long):
        return exc
    name = storable_text(type(exc).__qualname__, limit=200)
    replacement = StepError(storable_text(f"{name}: {message}" if message else name, limit=MAX_ERROR_MESSAGE))
    if too_long:
        # The chain would print the original's message whole in every traceback Celery logs and sends.
        replacement.__suppress_context__ = True
        return replacement.with_traceback(exc.__traceback__)
    replacement.__cause__ = exc
    return replacement
