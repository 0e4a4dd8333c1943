"""Acceptance: metrics scraped over HTTP from two worker processes sum to what happened; run gauges agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import wait_all_finished
from workflow_celery import SQLStore, Workflow

PORTS = (19201, 19202)


def scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize("broker", ["redis"])
def test_two_workers_metrics_sum_to_the_runs_and_the_run_gauges_agree(
    orders: Workflow[Order, OrderStatus],
    start_worker: Callable[..., Worker],
    store: SQLStore,
    pg_database: str,
    broker_url: str,
    tmp_path: Path,
) -> None:
    for port in PORTS:
        multiproc = tmp_path / f"prom-{port}"
        multiproc.mkdir()
        env = {"WORKFLOW_CELERY_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
        start_worker("examples.orders", "order-processing.*", concurrency=2, env=env)
    total = 40
    run_ids = [orders.trigger(f"m-{i}", initial_value=Order(id=f"m-{i}", items=["a"], total=5.0)) for i in range(total)]
    wait_all_finished(orders, run_ids, timeout=120)
    pages = [scrape(port) for port in PORTS]
    created = {"workflow_name": "order-processing", "process_name": "order-processing.created"}
    answered = sum(sample(p, "workflow_process_latency_seconds_count", **created) for p in pages)
    skipped = sum(sample(p, "workflow_process_skipped_events_count_total", **created) for p in pages)
    assert answered - skipped == total  # every run's first doorbell answered once, duplicates counted apart
    started = {"workflow_name": "order-processing", "previous_run_state": "INITIATED", "current_run_state": "RUNNING"}
    assert sum(sample(p, "workflow_run_state_changes_total", **started) for p in pages) == total
    finished = {"workflow_name": "order-processing", "previous_run_state": "RUNNING", "current_run_state": "COMPLETED"}
    assert sum(sample(p, "workflow_run_state_changes_total", **finished) for p in pages) == total
    assert all(sample(p, "workflow_process_latency_seconds_count", **created) > 0 for p in pages)  # both worked
    fulfilled = {"workflow_name": "order-processing", "status": "FULFILLED", "run_state": "COMPLETED"}
    # Read from the database: each worker says the same, not its share.
    assert [sample(p, "workflow_runs", **fulfilled) for p in pages] == [total, total]
    assert all(sample(p, "workflow_metrics_database_up", workflow_name="order-processing") == 1 for p in pages)
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    once = subprocess.run(
        [sys.executable, "-m", "workflow_celery.cli", "-A", "examples.orders", "metrics", "--once"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert sample(once.stdout, "workflow_runs", **fulfilled) == total
    assert "workflow_process_lag_seconds" in once.stdout
