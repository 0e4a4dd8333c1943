"""Acceptance: the CLI in the standard Django + Celery layout: ``celery -A proj workflow``, ``manage.py workflow``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT
from workflow_celery import Workflow

PROJECT = Path(__file__).resolve().parent / "django_project"


def run(*args: str, db: str, broker: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WORKFLOW_CELERY_DATABASE_URL": db,
        "CELERY_BROKER_URL": broker,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), str(ROOT)]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(list(args), cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_celery_workflow_in_the_django_layout(
    orders: Workflow[Order, OrderStatus], pg_database: str, broker_url: str
) -> None:
    run_id = orders.trigger("django-1", initial_value=Order(id="django-1", items=["a"], total=1))
    celery = str(Path(sys.executable).with_name("celery"))
    listed = run(celery, "-A", "proj", "workflow", "runs", "list", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "(1 run of order-processing)" in listed.stdout


def test_manage_py_workflow(orders: Workflow[Order, OrderStatus], pg_database: str, broker_url: str) -> None:
    run_id = orders.trigger("django-2", initial_value=Order(id="django-2", items=["a"], total=1))
    manage = [sys.executable, "manage.py", "workflow"]
    listed = run(*manage, "runs", "list", "--json", db=pg_database, broker=broker_url)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout
    paused = run(*manage, "runs", "pause", run_id, "--reason", "from manage.py", db=pg_database, broker=broker_url)
    assert paused.returncode == 0, paused.stderr
    assert orders.lookup(run_id).meta.run_state_reason == "from manage.py"
    shown = run(*manage, "--help", db=pg_database, broker=broker_url)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: manage.py workflow")
    again = run(*manage, "runs", "list", "--settings", "proj.settings", db=pg_database, broker=broker_url)
    assert again.returncode == 0 and run_id in again.stdout, again.stderr  # Django's own option, applied by Django
    bad = run(*manage, "runs", "show", "nope", db=pg_database, broker=broker_url)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("manage.py workflow: error: run 'nope' not found")


def test_manage_py_workflow_without_the_setting_says_what_to_set(pg_database: str, broker_url: str) -> None:
    proc = run(
        sys.executable, "manage.py", "workflow", "runs", "list", "--settings=proj.bare_settings",
        db=pg_database, broker=broker_url,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr
        == 'manage.py workflow: error: set WORKFLOW_CELERY = {"APP": "<the module that builds your workflows>"}\n'
    )


def test_the_recommended_celery_settings_reach_the_app(pg_database: str, broker_url: str) -> None:
    code = "from proj.celery import app; c = app.conf; print(c.task_time_limit, c.task_acks_late, c.broker_url)"
    proc = run(sys.executable, "-c", code, db=pg_database, broker=broker_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["300", "True", broker_url]
