"""Celery adapter: one task and queue per status, pattern ``-Q``, the outbox relay in every worker."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured

from ..core.definition import Definition
from ..core.engine import Outcome
from ..core.errors import ConfigurationError
from ..core.hooks import HookOutcome
from ..core.maintenance import Maintenance
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


class CeleryDispatcher:
    """Publishes doorbells as Celery task messages (JSON kwargs, ids only)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        with self.app.producer_or_acquire() as producer:
            for m in messages:
                self.app.send_task(
                    m.task,
                    kwargs=dict(m.body),
                    queue=m.queue,
                    task_id=f"{m.id}-{m.attempts}",
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
            app, queue_name, f"Step {definition.status_name(status)} of workflow {wf.name}.", _step_runner(wf, status)
        )
    _register_task(app, definition.delete_queue(), f"Data deletion of workflow {wf.name}.", wf.handle_delete)
    for event, fns in definition.hooks.items():
        if fns:
            _register_task(
                app, definition.hook_queue_for(event), f"{event} hooks of workflow {wf.name}.", _hook_runner(wf, event)
            )
    reg[definition.name] = wf
    return wf


def _step_runner(wf: Workflow[Any, Any], status: int) -> Callable[[Any], Outcome]:
    def run(body: Any) -> Outcome:
        return wf.handle_step(status, body)

    return run


def _hook_runner(wf: Workflow[Any, Any], event: str) -> Callable[[Any], HookOutcome]:
    def run(body: Any) -> HookOutcome:
        return wf.handle_hook(event, body)

    return run


def _register_task(app: Celery, queue_name: str, doc: str, handler: Callable[[Any], Outcome | HookOutcome]) -> None:
    def task(*args: Any, **kwargs: Any) -> str:
        # Our messages carry keyword arguments; anything else is handed over as is, to be rejected with a log line.
        body: Any = kwargs if not args else (args[0] if len(args) == 1 and not kwargs else list(args))
        return str(handler(body).value)

    task.__name__ = queue_name.replace("-", "_").replace(".", "__")
    task.__doc__ = doc
    app.task(
        name=queue_name,
        queue=queue_name,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        typing=False,
        serializer="json",
    )(task)


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

    signals.celeryd_init.connect(on_celeryd_init, weak=False)
    app.steps["worker"].add(RelayStep)


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
    if limit is None:
        log.warning(
            "task_time_limit is not set: a step running longer than the broker's visibility_timeout (%ss) "
            "would be delivered to a second worker while it runs",
            visibility,
        )
    elif limit >= visibility:
        raise ImproperlyConfigured(
            f"task_time_limit ({limit}s) must be shorter than broker_transport_options['visibility_timeout'] "
            f"({visibility}s): the broker would deliver a running step to a second worker"
        )


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


class RelayStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the outbox relay in the worker's main process (every worker; safe to run many)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._app: Celery = worker.app

    def start(self, worker: Any) -> None:
        workflows = list(registry(self._app).values())
        if workflows:
            self._thread, self._stop = Maintenance(workflows).start_thread("workflow-celery-relay")
        port = os.environ.get(METRICS_PORT_ENV)
        if port:
            from ..metrics import serve

            serve(int(port), os.environ.get("WORKFLOW_CELERY_METRICS_ADDR", "127.0.0.1"))

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    shutdown = stop
