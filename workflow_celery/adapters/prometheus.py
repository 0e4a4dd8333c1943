"""Prometheus metrics of hook executions, and the lag of each status' step.

``workflow_hook_executions_total``, ``workflow_hook_errors_total`` and
``workflow_hook_duration_seconds``, labelled by workflow and hook;
``workflow_process_lag_seconds`` and ``workflow_process_lag_alert`` (the
original's names), labelled ``workflow_name`` and ``process_name`` (the
status' queue), measured from the database by every worker's maintenance
round (``core.lag``).

Celery's prefork pool runs hooks in child processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting the worker
so every child writes to it, and set ``WORKFLOW_CELERY_METRICS_PORT`` to have
the worker's main process serve ``/metrics`` aggregated over all children.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prom_multiprocess

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "WORKFLOW_CELERY_METRICS_PORT"


class PrometheusMetrics:
    """Hook executions counted in a Prometheus registry (the default registry unless given one).

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
        lag_labels = ["workflow_name", "process_name"]
        # Every worker measures the same database: the latest figure of any process is the figure.
        self.lag_seconds = Gauge(
            "workflow_process_lag_seconds",
            "How long the oldest run waiting at the status has waited (less the step's consume_lag).",
            lag_labels,
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.lag_alert = Gauge(
            "workflow_process_lag_alert",
            "1 while the oldest run waiting at the status has waited longer than its lag_alert, else 0.",
            lag_labels,
            registry=registry,
            multiprocess_mode="mostrecent",
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

    def lag_measured(self, workflow: str, process: str, seconds: float, alert: bool | None) -> None:
        self.lag_seconds.labels(workflow, process).set(seconds)
        if alert is not None:  # as in the original, no alert gauge without a threshold
            self.lag_alert.labels(workflow, process).set(1 if alert else 0)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics] = weakref.WeakKeyDictionary()


def serve(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics``; aggregated over processes when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    registry: CollectorRegistry | None = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server = start_http_server(port, addr=addr, registry=registry) if registry else start_http_server(port, addr=addr)
    log.info("workflow-celery metrics on http://%s:%d/metrics", addr, port)
    return server
