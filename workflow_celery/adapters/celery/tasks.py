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
from celery.exceptions import Retry

from ...core.answer import Answer, Outcome
from ...core.definition import Definition
from ...core.doorbell import describe_task, task_id, with_attempt
from ...core.errors import ConfigurationError
from ...core.options import WorkflowOptions
from ...core.ports import Clock, RecordStore
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
    retried, while its due time waits in the database for the relay.
    """
    if answer.error is not None and answer.retry is not None:
        # Raised "from" the failure, so the traceback Flower shows starts with the step's own frames.
        if answer.retry.countdown is not None and answer.message_id is not None:
            following = answer.attempt + 1
            retry = task.retry(
                kwargs=with_attempt(body, following),
                exc=answer.error,
                countdown=answer.retry.countdown,
                throw=False,
                task_id=task_id(answer.message_id, following),
                kwargsrepr=describe_task(wf.definition, body, following),
            )
            raise retry from answer.error
        raise Retry(exc=answer.error, when=answer.retry.retry_at) from answer.error
    if answer.error is not None and answer.outcome is Outcome.PAUSED_AFTER_ERRORS:
        raise answer.error
    return str(answer.outcome.value)
