"""Acceptance: ``celery -A proj workflow …``, the CLI as a Celery subcommand (the ``celery.commands`` entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT
from workflow_celery import RunState, SQLStore, Workflow

CELERY = str(Path(sys.executable).with_name("celery"))  # the celery command of this environment
APP = "tests.acceptance.pluginapp"


def celery(*args: str, db: str, broker: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": db, "CELERY_BROKER_URL": broker}
    env.pop("WORKFLOW_CELERY_TRACEBACK", None)
    return subprocess.run([CELERY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_workflows_of_the_apps_task_modules_are_found(pg_database: str, broker_url: str) -> None:
    up = celery("-A", APP, "workflow", "db", "upgrade", db=pg_database, broker=broker_url)
    assert up.returncode == 0, up.stderr
    assert "schema" in up.stdout
    listed = celery("-A", APP, "workflow", "runs", "list", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    assert "(0 runs of order-processing)" in listed.stdout
    # The standalone command imports only the module it is given, which builds nothing by itself.
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    standalone = subprocess.run(
        [str(Path(sys.executable).with_name("workflow-celery")), "-A", APP, "runs", "list"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert standalone.returncode == 1 and "builds no workflow" in standalone.stderr
    assert f"has a Celery app: `celery -A {APP} workflow …` imports its task modules first" in standalone.stderr


def test_runs_are_listed_and_controlled(
    orders: Workflow[Order, OrderStatus], store: SQLStore, pg_database: str, broker_url: str
) -> None:
    run_id = orders.trigger("plugin-1", initial_value=Order(id="plugin-1", items=["a"], total=1))
    listed = celery("-A", APP, "workflow", "runs", "list", "--json", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "plugin-1" in listed.stdout
    paused = celery(
        "-A", APP, "workflow", "runs", "pause", run_id, "--reason", "from celery", db=pg_database, broker=broker_url
    )
    assert paused.returncode == 0, paused.stderr
    assert store.lookup(run_id).run_state is RunState.PAUSED
    assert store.lookup(run_id).meta.run_state_reason == "from celery"


def test_errors_are_one_line_with_the_exit_status(pg_database: str, broker_url: str) -> None:
    missing = celery("-A", APP, "workflow", "runs", "show", "no-such-run", db=pg_database, broker=broker_url)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(f"celery -A {APP} workflow: error: ")
    usage = celery("-A", APP, "workflow", "runs", "frobnicate", db=pg_database, broker=broker_url)
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_an_app_without_workflows_is_named(pg_database: str, broker_url: str) -> None:
    proc = celery("-A", "benchmarks.chain_app", "workflow", "runs", "list", db=pg_database, broker=broker_url)
    assert proc.returncode == 1
    assert "no workflow is built on the Celery app 'bench-chain'" in proc.stderr


def test_the_app_is_named_before_workflow(pg_database: str, broker_url: str) -> None:
    after = celery("-A", APP, "workflow", "-A", "other", "runs", "list", db=pg_database, broker=broker_url)
    assert after.returncode == 2
    assert "-A goes before workflow: celery -A proj workflow runs list" in after.stderr
    nothing = celery("workflow", "runs", "list", db=pg_database, broker=broker_url)
    assert nothing.returncode == 2
    assert "name the app that builds your workflows: celery -A proj workflow runs list" in nothing.stderr
    shown = celery("-A", APP, "workflow", "--help", db=pg_database, broker=broker_url)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"usage: celery -A {APP} workflow [-h] [--traceback]")
    assert "-A APP" not in shown.stdout and f"celery -A {APP} workflow runs list" in shown.stdout
    missing = celery("-A", APP, "workflow", "runs", db=pg_database, broker=broker_url)
    assert missing.returncode == 2
    assert f"celery -A {APP} workflow runs: error: the following arguments are required: COMMAND" in missing.stderr
