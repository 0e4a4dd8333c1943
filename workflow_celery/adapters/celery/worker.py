"""What a ``celery worker`` of an app with workflows does besides running tasks.

Its queues are selected from ``-Q`` and ``-X`` patterns (every workflow queue
without ``-Q``), the time limits are checked against the broker's
redelivery, whatever cannot be delivered to a task is kept as a dead letter
(``worker_queues``, ``consumer``), the outbox relay and the claims keeper run
in the main process, and a pool process that dies has its claim expired at
once.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured, TimeLimitExceeded, WorkerLostError
from celery.worker import state as worker_state

from ...core.doorbell import message_id_of
from ...core.workflow import Workflow
from ...runtime.claims import ClaimKeeper
from ...runtime.connectors import ConnectorRunner
from ...runtime.maintenance import Maintenance
from .purge import install_purge_patterns
from .registry import registry, workflow_of_task
from .worker_queues import WorkflowQueues, note_requested_queues

METRICS_PORT_ENV = "WORKFLOW_CELERY_METRICS_PORT"

log = logging.getLogger(__name__)


def install_worker_support(app: Celery) -> None:
    """Hook the workers of ``app`` (once per app): queues, time-limit check, dead letters, relay, lost processes."""

    def on_celeryd_init(sender: Any = None, instance: Any = None, options: Any = None, **_: Any) -> None:
        if instance is None or getattr(instance, "app", None) is not app:
            return
        # Only noted here: Celery logs and ignores an exception raised by a signal handler, and selects its
        # queues after this signal; the WorkflowQueues bootstep acts on them.
        note_requested_queues(instance, options)

    def on_task_failure(sender: Any = None, exception: Any = None, kwargs: Any = None, **_: Any) -> None:
        # Sent in the worker's main process when a pool process died running the task, or was killed at the
        # hard time limit. Expire its claim now, so the relay rings the doorbell within a tick and the next
        # attempt counts this one, instead of waiting for the claim to run out.
        if not isinstance(exception, WorkerLostError | TimeLimitExceeded):
            return
        wf = workflow_of_task(app, getattr(sender, "name", None))
        message_id = message_id_of(kwargs)
        if wf is None or message_id is None:
            return
        try:
            wf.abandon_attempt(message_id, str(kwargs["run_id"]), hook="hook" in kwargs)
        except Exception:
            log.warning("could not release the claim of %s; it expires on its own", message_id, exc_info=True)

    signals.celeryd_init.connect(on_celeryd_init, weak=False)
    signals.task_failure.connect(on_task_failure, weak=False)
    app.steps["worker"].add(WorkflowQueues)
    app.steps["worker"].add(RelayStep)
    install_purge_patterns(app)


def check_time_limits(app: Celery) -> None:
    """Refuse to start when the broker would take a running step away from its worker.

    With Redis (and SQS) an unacknowledged message is delivered again after
    ``visibility_timeout``; a step allowed to run longer than that would run
    twice at the same time. With RabbitMQ see ``check_consumer_timeout``.
    The claim keeps the second copy from running it, but the first is never acknowledged in time.
    Raises ``ImproperlyConfigured``.
    """
    # Celery's default broker, when none is set, is RabbitMQ on localhost.
    url = str(app.conf.broker_url or "amqp://")
    if url.startswith(AMQP_SCHEMES):
        check_consumer_timeout(app)
        return
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


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "librabbitmq://")
CONSUMER_TIMEOUT_SETTING = "workflow_consumer_timeout"
RABBITMQ_CONSUMER_TIMEOUT = 1800.0
"""RabbitMQ's own default ``consumer_timeout`` since 3.8.17, in seconds: assumed when none is declared."""


def check_consumer_timeout(app: Celery) -> None:
    """Refuse to start when RabbitMQ would close the channel under a running step.

    RabbitMQ closes the channel of a consumer that keeps a delivery
    unacknowledged longer than its ``consumer_timeout``, and a worker loses
    every message that channel held. A step is acknowledged after it ran, and a
    Celery retry waits unacknowledged for its countdown first, so
    ``task_time_limit + max_retry_countdown`` must stay below it. The server
    does not tell its clients that value: it is read from the app's
    ``workflow_consumer_timeout`` setting (seconds; ``None`` or 0 when the server
    has none), RabbitMQ's default of 1800 s when the setting is absent.
    Raises ``ImproperlyConfigured``.
    """
    declared = app.conf.get(CONSUMER_TIMEOUT_SETTING, RABBITMQ_CONSUMER_TIMEOUT)
    if not declared:
        return
    timeout = float(declared)
    limit = app.conf.task_time_limit
    countdown = max((wf.options.max_retry_countdown.total_seconds() for wf in registry(app).values()), default=0.0)
    if limit is None:
        log.warning(
            "task_time_limit is not set: a step running longer than RabbitMQ's consumer_timeout (%gs) would have "
            "the worker's channel closed under it",
            timeout,
        )
    elif limit + countdown >= timeout:
        raise ImproperlyConfigured(
            f"task_time_limit ({limit}s) plus max_retry_countdown ({countdown:g}s) must be shorter than RabbitMQ's "
            f"consumer_timeout ({timeout:g}s, setting {CONSUMER_TIMEOUT_SETTING}): a retry waits unacknowledged in "
            "a worker for its countdown, then runs, and the broker would close the worker's channel under it and "
            "deliver its messages again"
        )


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
        self._connectors: ConnectorRunner | None = None
        self._app: Celery = worker.app

    def start(self, worker: Any) -> None:
        workflows = list(registry(self._app).values())
        if workflows:
            self._thread, self._stop = Maintenance(workflows).start_thread("workflow-celery-relay")
            self._claims = ClaimKeeper(workflows, running_tasks).start()
        served = _served(self._app, workflows)
        if any(wf.definition.connectors for wf in served):
            self._connectors = ConnectorRunner(served, consumer=f"{worker.hostname}-{os.getpid()}").start()
        port = os.environ.get(METRICS_PORT_ENV)
        if port:
            from ..prometheus import serve

            addr = os.environ.get("WORKFLOW_CELERY_METRICS_ADDR", "127.0.0.1")
            try:
                serve(int(port), addr, workflows)
            except OSError as exc:
                # The worker's work does not depend on its metrics: it goes on without them.
                log.error(
                    "cannot serve metrics on %s:%s (WORKFLOW_CELERY_METRICS_ADDR, %s): %s; "
                    "give each worker on this host a port of its own. The worker goes on without /metrics",
                    addr, port, METRICS_PORT_ENV, exc.strerror or exc,
                )  # fmt: skip

    def stop(self, worker: Any) -> None:
        # The claims keep being renewed: a warm shutdown stops this step before the pool has finished the
        # tasks it is running, and their claims must outlive them. The thread ends with the process.
        self._stop.set()
        if self._connectors is not None:
            self._connectors.stop()
            self._connectors = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    shutdown = stop


def _served(app: Celery, workflows: list[Workflow[Any, Any]]) -> list[Workflow[Any, Any]]:
    """The workflows of which this worker consumes at least one queue: it runs their connectors."""
    selected = app.amqp.queues.consume_from
    if not selected:
        return workflows
    return [wf for wf in workflows if set(selected) & set(wf.queues())]
