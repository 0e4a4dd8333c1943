"""Prometheus metrics: what each process does, and what the database holds.

Counted by the process that did it (summed over processes by Prometheus):

- ``workflow_process_latency_seconds`` (histogram), ``workflow_process_error_count_total``,
  ``workflow_process_skipped_events_count_total`` (label ``reason``: the outcome), labelled
  ``workflow_name`` and ``process_name`` (the queue): each doorbell answered on a status' queue;
- ``workflow_run_state_changes_total`` (``workflow_name``, ``previous_run_state``,
  ``current_run_state``): each committed change of a run's run state;
- ``workflow_hook_executions_total``, ``workflow_hook_errors_total``,
  ``workflow_hook_duration_seconds`` (``workflow``, ``hook``).

The names are the original's (luno/workflow), with the ``_total`` Prometheus'
Python client gives every counter. Read from the database at each scrape
(``DatabaseCollector``), so any number of workers agree:

- ``workflow_runs`` (``workflow_name``, ``status``, ``run_state``), 0 for an empty pair;
- ``workflow_oldest_run_age_seconds`` (``workflow_name``, ``status``): the
  in-progress run waiting longest at each status with a step (0 with none);
- ``workflow_process_lag_seconds`` and ``workflow_process_lag_alert`` (see ``core.lag``);
- ``workflow_metrics_database_up`` (``workflow_name``): 0 when the store could not be read.

Celery's prefork pool answers doorbells in child processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting the worker
so every child writes to it, and set ``WORKFLOW_CELERY_METRICS_PORT`` to have
the worker's main process serve ``/metrics``, aggregated over its children.
``workflow-celery -A app metrics`` serves the database's metrics alone.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.answer import Outcome
from ..core.lag import WaitingRuns, measure
from ..core.run_state import RunState

if TYPE_CHECKING:
    from ..core.workflow import Workflow

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "WORKFLOW_CELERY_METRICS_PORT"

ERRORS = {Outcome.RETRY_SCHEDULED.value, Outcome.PAUSED_AFTER_ERRORS.value}
SKIPPED = {
    o.value
    for o in (
        Outcome.DROPPED_STALE,
        Outcome.DROPPED_RUNNING,
        Outcome.DROPPED_STOPPED,
        Outcome.DROPPED_UNKNOWN_RUN,
        Outcome.DROPPED_INVALID,
        Outcome.SUPERSEDED,
    )
}


class PrometheusMetrics:
    """What this process does, counted in a Prometheus registry (the default registry unless given one).

    The collectors are created with the object, on its registry: a registry
    can hold only one of each, so ``for_registry`` hands out one object per
    registry, which ``build`` uses when no ``metrics=`` is given.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["workflow", "hook"]
        self.executions = Counter(
            "workflow_hook_executions_total", "Hook executions, successful or not.", labels, registry=registry
        )
        self.errors = Counter("workflow_hook_errors_total", "Hook executions that raised.", labels, registry=registry)
        self.duration = Histogram(
            "workflow_hook_duration_seconds",
            "Time spent in a hook.",
            labels,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=registry,
        )
        process = ["workflow_name", "process_name"]
        self.latency = Histogram(
            "workflow_process_latency_seconds",
            "Time to answer one doorbell on a status' queue (the step, a timeout, the timers).",
            process,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.process_errors = Counter(
            "workflow_process_error_count", "Failed attempts (retried, or pausing the run).", process, registry=registry
        )
        self.skipped = Counter(
            "workflow_process_skipped_events_count",
            "Doorbells answered without work: late, duplicate, for a stopped run, or held elsewhere.",
            [*process, "reason"],
            registry=registry,
        )
        self.run_states = Counter(
            "workflow_run_state_changes",
            "Committed changes of a run's run state.",
            ["workflow_name", "previous_run_state", "current_run_state"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry = REGISTRY) -> PrometheusMetrics:
        """The metrics object of ``registry``, created on first use."""
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        self.executions.labels(workflow, hook).inc()
        self.duration.labels(workflow, hook).observe(seconds)
        if not ok:
            self.errors.labels(workflow, hook).inc()

    def doorbell_answered(self, workflow: str, process: str, seconds: float, outcome: str) -> None:
        self.latency.labels(workflow, process).observe(seconds)
        if outcome in ERRORS:
            self.process_errors.labels(workflow, process).inc()
        elif outcome in SKIPPED:
            self.skipped.labels(workflow, process, outcome).inc()

    def run_state_changed(self, workflow: str, previous: RunState, current: RunState) -> None:
        self.run_states.labels(workflow, previous.name, current.name).inc()


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics] = weakref.WeakKeyDictionary()


class DatabaseCollector(Collector):
    """The run gauges of ``workflows``, read from their stores at each scrape (see the module's docstring)."""

    def __init__(self, workflows: Sequence[Workflow[Any, Any]]) -> None:
        self.workflows = list(workflows)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily(
            "workflow_runs", "Runs by status and run state.", labels=["workflow_name", "status", "run_state"]
        )
        oldest = GaugeMetricFamily(
            "workflow_oldest_run_age_seconds",
            "Age of the in-progress run waiting longest at each status with a step (since it arrived there).",
            labels=["workflow_name", "status"],
        )
        lag = GaugeMetricFamily(
            "workflow_process_lag_seconds",
            "Wait of the oldest run at the status, less the step's consume_lag.",
            labels=["workflow_name", "process_name"],
        )
        alert = GaugeMetricFamily(
            "workflow_process_lag_alert",
            "1 while that wait exceeds the status' lag_alert, else 0.",
            labels=["workflow_name", "process_name"],
        )
        up = GaugeMetricFamily(
            "workflow_metrics_database_up", "1 when the workflow's store could be read.", labels=["workflow_name"]
        )
        for wf in self.workflows:
            store = wf.store
            if not isinstance(store, WaitingRuns):
                continue
            try:
                counts = store.runs_by_status(wf.name)
                waiting = store.waiting_runs(wf.name, sorted(wf.definition.steps))
                now = wf.clock.now()
                lags = measure(wf, now)
            except Exception as exc:
                log.warning("metrics: could not read the runs of workflow %s: %s: %s", wf.name, type(exc).__name__, exc)
                up.add_metric([wf.name], 0)
                continue
            up.add_metric([wf.name], 1)
            # Every status and run state, 0 when empty: a series that drops to 0 rather than vanishing.
            found = {(status, state): count for status, state, count in counts}
            for status in wf.definition.graph.nodes:
                for state in RunState:
                    count = found.get((status, int(state)), 0)
                    runs.add_metric([wf.name, wf.definition.status_name(status), state.name], count)
            ages = {w.status: (now - w.oldest).total_seconds() for w in waiting}
            for status in sorted(wf.definition.steps):
                oldest.add_metric([wf.name, wf.definition.status_name(status)], ages.get(status, 0.0))
            for measured in lags:
                lag.add_metric([wf.name, measured.process_name], measured.seconds)
                if measured.threshold is not None:
                    alert.add_metric([wf.name, measured.process_name], 1 if measured.alert else 0)
        yield from (runs, oldest, lag, alert, up)


def serve(port: int, addr: str = "127.0.0.1", workflows: Sequence[Workflow[Any, Any]] = ()) -> Any:
    """Serve ``/metrics``: this process' (aggregated over processes when ``PROMETHEUS_MULTIPROC_DIR`` is set)
    and, with ``workflows``, their database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    if workflows:
        registry.register(DatabaseCollector(workflows))
    server = start_http_server(port, addr=addr, registry=registry)
    log.info("workflow-celery metrics on http://%s:%d/metrics", addr, port)
    return server
