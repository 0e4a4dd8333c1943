"""Celery adapter: one task and queue per status, pattern ``-Q``, the outbox relay in every worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured

from ..core.definition import Definition
from ..core.errors import ConfigurationError
from ..core.options import WorkflowOptions
from ..core.ports import Clock, OutboxMessage, RecordStore
from ..core.workflow import Workflow
from .queues import expand_queue_patterns

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
        raise ConfigurationError("a workflow with this name is already built on this Celery app", workflow=definition.name)
    wf: Workflow[Any, Any] = Workflow(definition, store, CeleryDispatcher(app), clock, options)
    for status, queue_name in definition.step_queues().items():
        _register_step_task(app, wf, status, queue_name)
    reg[definition.name] = wf
    return wf


def _register_step_task(app: Celery, wf: Workflow[Any, Any], status: int, queue_name: str) -> None:
    def step_task(*args: Any, **kwargs: Any) -> str:
        body: Any = kwargs if not args else (args[0] if len(args) == 1 and not kwargs else list(args))
        return wf.handle_step(status, body).value

    step_task.__name__ = queue_name.replace("-", "_").replace(".", "__")
    step_task.__doc__ = f"Step {wf.definition.status_name(status)} of workflow {wf.name}."
    app.task(
        name=queue_name,
        queue=queue_name,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        typing=False,
        serializer="json",
    )(step_task)


# -- worker support ------------------------------------------------------------


def _install_worker_support(app: Celery) -> None:
    def on_celeryd_init(sender: Any = None, instance: Any = None, **_: Any) -> None:
        if instance is None or getattr(instance, "app", None) is not app:
            return
        original = instance.setup_queues

        def setup_queues(include: Any, exclude: Any = None) -> Any:
            known = all_queues(app)
            queues = app.amqp.queues
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
        if not workflows:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=_relay_loop, args=(workflows, self._stop), name="workflow-celery-relay", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    shutdown = stop


def _relay_loop(workflows: list[Workflow[Any, Any]], stop: threading.Event) -> None:
    interval = min(wf.options.relay_interval.total_seconds() for wf in workflows)
    by_store: dict[int, Workflow[Any, Any]] = {}
    for wf in workflows:
        by_store.setdefault(id(wf.store), wf)
    while not stop.wait(interval):
        for wf in by_store.values():
            try:
                sent = wf.relay_once()
                if sent:
                    log.info("workflow-celery relay published %d due message(s)", sent)
            except Exception:
                log.warning("workflow-celery relay failed; retrying in %.1fs", interval, exc_info=True)
