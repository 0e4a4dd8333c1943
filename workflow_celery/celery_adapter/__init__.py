"""Celery adapter: one task and queue per status, pattern ``-Q``, the outbox relay in every worker.

Each attempt at a doorbell's work is one Celery task (``{doorbell}-attempt-{n}``),
so Flower shows every attempt: a failed attempt that will be retried ends as
``RETRY`` with its exception, the attempt that pauses a run as ``FAILURE``.
Near retries are Celery's own (``Task.retry`` with a countdown, listed by
``celery inspect scheduled``); far ones wait in the database.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, Task, bootsteps, signals
from celery.exceptions import ImproperlyConfigured, Retry, TimeLimitExceeded, WorkerLostError
from celery.worker import state as worker_state

from ..core.answer import Answer, Outcome
from ..core.claims import ClaimKeeper
from ..core.definition import Definition
from ..core.errors import ConfigurationError
from ..core.maintenance import Maintenance
from ..core.messages import describe_task, message_id_of, task_id, with_attempt
from ..core.options import WorkflowOptions
from ..core.ports import Clock, OutboxMessage, RecordStore
from ..core.workflow import Workflow
from .queues import expand_queue_patterns

METRICS_PORT_ENV = "WORKFLOW_CELERY_METRICS_PORT"

__all__ = ["CeleryDispatcher", "attach_to_celery", "expand_queue_patterns", "registry"]

log = logging.getLogger(__name__)

_REGISTRY_ATTR = "_workflow_celery_workflows"


def registry(app: Celery) -> dict[str, Workflow[Any, Any]]:
    """The workflows built on ``app``, by name."""
    reg: dict[str, Workflow[Any, Any]] | None = getattr(app, _REGISTRY_ATTR, None)
    if reg is None:
        reg = {}
        setattr(app, _REGISTRY_ATTR, reg)
        _install_worker_support(app)
    return reg


def all_queues(app: Celery) -> list[str]:
    names: list[str] = []
    for wf in registry(app).values():
        names.extend(q for q in wf.queues() if q not in names)
    return names


def _definition(app: Celery, workflow_name: str) -> Definition[Any, Any] | None:
    wf = registry(app).get(workflow_name)
    return wf.definition if wf is not None else None


class CeleryDispatcher:
    """Publishes doorbells as Celery task messages (JSON kwargs, ids only).

    The task id names the doorbell and the attempt (``{doorbell}-attempt-{n}``)
    and ``kwargsrepr`` says, for Flower, which work of which run it is.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        with self.app.producer_or_acquire() as producer:
            for m in messages:
                attempt = m.retries + 1
                self.app.send_task(
                    m.task,
                    kwargs=with_attempt(m.body, attempt),
                    queue=m.queue,
                    task_id=task_id(m.id, attempt),
                    retries=m.retries,
                    kwargsrepr=describe_task(_definition(self.app, m.workflow_name), m.body, attempt),
                    producer=producer,
                    serializer="json",
                    ignore_result=True,
                )


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
    wf: Workflow[Any, Any] = Workflow(definition, store, CeleryDispatcher(app), clock, options)
    for status, queue_name in definition.step_queues().items():
        _register_task(
            app,
            wf,
            queue_name,
            f"Step {definition.status_name(status)} of workflow {wf.name}.",
            _step_runner(wf, status),
        )
    _register_task(app, wf, definition.delete_queue(), f"Data deletion of workflow {wf.name}.", wf.handle_delete)
    for event, fns in definition.hooks.items():
        if fns:
            _register_task(
                app,
                wf,
                definition.hook_queue_for(event),
                f"{event} hooks of workflow {wf.name}.",
                _hook_runner(wf, event),
            )
    reg[definition.name] = wf
    return wf


def _step_runner(wf: Workflow[Any, Any], status: int) -> Callable[[Any], Answer]:
    def run(body: Any) -> Answer:
        return wf.handle_step(status, body)

    return run


def _hook_runner(wf: Workflow[Any, Any], event: str) -> Callable[[Any], Answer]:
    def run(body: Any) -> Answer:
        return wf.handle_hook(event, body)

    return run


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


# -- worker support ------------------------------------------------------------


def _install_worker_support(app: Celery) -> None:
    def on_celeryd_init(sender: Any = None, instance: Any = None, **_: Any) -> None:
        if instance is None or getattr(instance, "app", None) is not app:
            return
        worker_app: Celery = instance.app
        original = instance.setup_queues

        def setup_queues(include: Any, exclude: Any = None) -> Any:
            # Raised here, not in the signal handler: Celery logs and ignores a signal handler's exception.
            check_time_limits(worker_app)
            known = all_queues(app)
            queues = worker_app.amqp.queues
            for name in known:
                # Declared exactly as a publisher's router creates them, so bindings match.
                if name not in queues:
                    queues.add(queues.new_missing(name))
            requested = _as_list(include)
            if requested:
                try:
                    include = expand_queue_patterns(requested, known)
                except ConfigurationError as exc:
                    raise ImproperlyConfigured(str(exc)) from exc
                log.info("workflow-celery: consuming queues %s", ", ".join(include))
            return original(include, exclude)

        instance.setup_queues = setup_queues

    def on_task_failure(sender: Any = None, exception: Any = None, kwargs: Any = None, **_: Any) -> None:
        # Sent in the worker's main process when a pool process died running the task, or was killed at the
        # hard time limit. Expire its claim now, so the relay rings the doorbell within a tick and the next
        # attempt counts this one, instead of waiting for the claim to run out.
        if not isinstance(exception, WorkerLostError | TimeLimitExceeded):
            return
        wf = _workflow_of_task(app, getattr(sender, "name", None))
        message_id = message_id_of(kwargs)
        if wf is None or message_id is None:
            return
        try:
            wf.store.abandon_claim(message_id, wf.clock.now())
        except Exception:
            log.warning("could not release the claim of %s; it expires on its own", message_id, exc_info=True)

    signals.celeryd_init.connect(on_celeryd_init, weak=False)
    signals.task_failure.connect(on_task_failure, weak=False)
    app.steps["worker"].add(RelayStep)


def _workflow_of_task(app: Celery, name: str | None) -> Workflow[Any, Any] | None:
    for wf in registry(app).values():
        if name in wf.queues():
            return wf
    return None


def check_time_limits(app: Celery) -> None:
    """Refuse to start when Redis would hand a running step to a second worker.

    With Redis (and SQS) an unacknowledged message is delivered again after
    ``visibility_timeout``; a step allowed to run longer than that would run
    twice at the same time. Doorbell leases cover our own relay, not that.
    """
    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis", "rediss", "sqs")):
        return
    visibility = (app.conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    limit = app.conf.task_time_limit
    countdown = max((wf.options.max_retry_countdown.total_seconds() for wf in registry(app).values()), default=0.0)
    if limit is None:
        log.warning(
            "task_time_limit is not set: a step running longer than the broker's visibility_timeout (%ss) "
            "would be delivered to a second worker while it runs",
            visibility,
        )
    elif limit + countdown >= visibility:
        raise ImproperlyConfigured(
            f"task_time_limit ({limit}s) plus max_retry_countdown ({countdown:g}s) must be shorter than "
            f"broker_transport_options['visibility_timeout'] ({visibility}s): a retry waits unacknowledged in a "
            "worker for its countdown, then runs, and the broker would deliver it to a second worker"
        )


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def running_tasks() -> list[tuple[str, Any]]:
    """``(task name, kwargs)`` of every task this worker's pool is running now (read in the main process)."""
    return [(request.name, request.kwargs) for request in list(worker_state.active_requests)]


class RelayStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the outbox relay and renews the claims of running tasks, in the worker's main process.

    Every worker runs both; it is safe to run many. The claims are renewed
    from the main process because a pool process busy in C code holding the
    GIL could not renew its own.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._claims: ClaimKeeper | None = None
        self._app: Celery = worker.app

    def start(self, worker: Any) -> None:
        workflows = list(registry(self._app).values())
        if workflows:
            self._thread, self._stop = Maintenance(workflows).start_thread("workflow-celery-relay")
            self._claims = ClaimKeeper(workflows, running_tasks).start()
        port = os.environ.get(METRICS_PORT_ENV)
        if port:
            from ..metrics import serve

            serve(int(port), os.environ.get("WORKFLOW_CELERY_METRICS_ADDR", "127.0.0.1"))

    def stop(self, worker: Any) -> None:
        # The claims keep being renewed: a warm shutdown stops this step before the pool has finished the
        # tasks it is running, and their claims must outlive them. The thread ends with the process.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    shutdown = stop
