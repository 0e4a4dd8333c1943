"""Acceptance: the operator CLI as a subprocess, on a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT
from tests.acceptance.failapp import OPTIONS, Task
from tests.acceptance.failapp import builder as fail_builder
from workflow_celery import InProcessBroker, RunState, SQLStore, Workflow


def cli(*args: str, db: str, broker: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": db, "CELERY_BROKER_URL": broker}
    return subprocess.run(
        [sys.executable, "-m", "workflow_celery.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_commands(pg_database: str, broker_url: str) -> None:
    up = cli("db", "upgrade", "--url", pg_database, db=pg_database, broker=broker_url)
    assert up.returncode == 0, up.stderr
    assert "schema is at revision" in up.stdout
    cur = cli("db", "current", db=pg_database, broker=broker_url)
    assert cur.returncode == 0 and cur.stdout.strip() == up.stdout.split()[-1]


def test_list_show_and_control_runs(
    orders: Workflow[Order, OrderStatus], store: SQLStore, pg_database: str, broker_url: str
) -> None:
    ids = [orders.trigger(f"cli-{i}", initial_value=Order(id=f"cli-{i}", items=["a"], total=1)) for i in range(3)]
    run = cli("-A", "examples.orders", "runs", "list", db=pg_database, broker=broker_url)
    assert run.returncode == 0, run.stderr
    assert all(f"cli-{i}" in run.stdout for i in range(3)) and "(3 runs of order-processing)" in run.stdout
    assert "INITIATED" in run.stdout and "CREATED" in run.stdout

    paused = cli(
        "-A", "examples.orders", "runs", "pause", ids[0], "--reason", "fraud check", db=pg_database, broker=broker_url
    )
    assert paused.returncode == 0, paused.stderr
    assert "INITIATED -> PAUSED" in paused.stdout
    assert store.lookup(ids[0]).run_state == RunState.PAUSED
    listed = cli(
        "-A", "examples.orders", "runs", "list", "--run-state", "paused", "--json", db=pg_database, broker=broker_url
    )
    rows = json.loads(listed.stdout)
    assert [(r["run_id"], r["reason"]) for r in rows] == [(ids[0], "fraud check")]

    assert cli("-A", "examples.orders", "runs", "resume", ids[0], db=pg_database, broker=broker_url).returncode == 0
    assert store.lookup(ids[0]).run_state == RunState.RUNNING
    cancelled = cli(
        "-A", "examples.orders", "runs", "cancel", ids[0], "--reason", "duplicate", db=pg_database, broker=broker_url
    )
    assert "RUNNING -> CANCELLED" in cancelled.stdout
    deleted = cli("-A", "examples.orders", "runs", "delete-data", ids[0], db=pg_database, broker=broker_url)
    assert "CANCELLED -> REQUESTED_DATA_DELETED" in deleted.stdout

    refused = cli("-A", "examples.orders", "runs", "cancel", ids[1], db=pg_database, broker=broker_url)
    assert refused.returncode == 1
    assert "invalid run state transition: from INITIATED to CANCELLED" in refused.stderr and ids[1] in refused.stderr
    assert store.lookup(ids[1]).run_state == RunState.INITIATED

    show = cli("-A", "examples.orders", "runs", "show", ids[0], db=pg_database, broker=broker_url)
    assert show.returncode == 0, show.stderr
    for text in [
        "run_state:    REQUESTED_DATA_DELETED",
        "v1",
        "v5",
        "fraud check",
        "duplicate",
        "history:",
        "order-processing.data-deletion",
    ]:
        assert text in show.stdout, (text, show.stdout)


def test_show_prints_the_last_error(
    store: SQLStore, pg_database: str, broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WFC_PAUSE_AFTER", "1")
    broker = InProcessBroker()
    wf = fail_builder().build(broker, store, **OPTIONS)
    run_id = wf.trigger("err-1", initial_value=Task(marker_dir=str(tmp_path), fail_times=-1, hook_fail_times=5))
    broker.drain()  # the step fails and pauses the run; its on_pause hook fails once
    show = cli("-A", "tests.acceptance.failapp", "runs", "show", run_id, db=pg_database, broker=broker_url)
    assert show.returncode == 0, show.stderr
    assert "run_state:    PAUSED" in show.stdout
    assert "at START: 1 failed attempt(s)" in show.stdout
    assert "builtins.ConnectionError: payment gateway unavailable (attempt 1)" in show.stdout
    assert "max error retry threshold hit" in show.stdout
    assert "hook errors:" in show.stdout
    assert "0:record_pause: 1 failed attempt(s), still failing, will retry" in show.stdout
    assert "builtins.RuntimeError: ticket system unavailable (call 1)" in show.stdout
    assert "flaky-steps.hooks.paused" in show.stdout  # its doorbell is pending


def test_bad_ids_and_names_give_clear_errors(
    orders: Workflow[Order, OrderStatus], pg_database: str, broker_url: str
) -> None:
    missing = cli("-A", "examples.orders", "runs", "show", "no-such-run", db=pg_database, broker=broker_url)
    assert missing.returncode == 1 and "run 'no-such-run' not found" in missing.stderr
    bad_status = cli("-A", "examples.orders", "runs", "list", "--status", "shipped", db=pg_database, broker=broker_url)
    assert bad_status.returncode == 1 and "unknown status 'shipped'" in bad_status.stderr
    assert "CREATED" in bad_status.stderr
    bad_module = cli("-A", "no.such.module", "runs", "list", db=pg_database, broker=broker_url)
    assert bad_module.returncode == 1 and "cannot import 'no.such.module'" in bad_module.stderr
    no_app = cli("runs", "list", db=pg_database, broker=broker_url)
    assert no_app.returncode == 2 and "-A/--app is required" in no_app.stderr
