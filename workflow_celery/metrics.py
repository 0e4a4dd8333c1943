"""Prometheus metrics of hook executions.

``workflow_hook_executions_total``, ``workflow_hook_errors_total`` and
``workflow_hook_duration_seconds``, labelled by workflow and hook.

Celery's prefork pool runs hooks in child processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting the worker
so every child writes to it, and set ``WORKFLOW_CELERY_METRICS_PORT`` to have
the worker's main process serve ``/metrics`` aggregated over all children.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as prom_multiprocess

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "WORKFLOW_CELERY_METRICS_PORT"

HOOK_EXECUTIONS = Counter("workflow_hook_executions_total", "Hook executions, successful or not.", ["workflow", "hook"])
HOOK_ERRORS = Counter("workflow_hook_errors_total", "Hook executions that raised.", ["workflow", "hook"])
HOOK_DURATION = Histogram(
    "workflow_hook_duration_seconds",
    "Time spent in a hook.",
    ["workflow", "hook"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
)


class PrometheusMetrics:
    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        HOOK_EXECUTIONS.labels(workflow, hook).inc()
        HOOK_DURATION.labels(workflow, hook).observe(seconds)
        if not ok:
            HOOK_ERRORS.labels(workflow, hook).inc()


def serve(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics``; aggregated over processes when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    registry: CollectorRegistry | None = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server = start_http_server(port, addr=addr, registry=registry) if registry else start_http_server(port, addr=addr)
    log.info("workflow-celery metrics on http://%s:%d/metrics", addr, port)
    return server
