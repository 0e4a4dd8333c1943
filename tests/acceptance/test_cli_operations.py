"""Acceptance: the operator's bulk changes, status and graphs through the ``workflow-celery`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.order_processing import Order, OrderStatus
from tests.acceptance.test_cli import cli
from workflow_celery import RunState, SQLStore, Workflow


@pytest.mark.parametrize("broker", ["redis"])
def test_bulk_resume_of_paused_runs_by_filter_with_a_dry_run_first(
    orders: Workflow[Order, OrderStatus], store: SQLStore, pg_database: str, broker_url: str
) -> None:
    ids = [orders.trigger(f"b-{i}", initial_value=Order(id=f"b-{i}", items=["a"], total=1)) for i in range(25)]
    for run_id in ids[:20]:
        orders.pause(run_id, "incident 42")
    app = ("-A", "examples.orders")

    dry = cli(*app, "runs", "bulk", "resume", "--run-state", "paused", "--dry-run", db=pg_database, broker=broker_url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry run: resume would be tried on 20 run(s) of order-processing\n")
    assert "... and 10 more" in dry.stdout
    assert store.count_runs("order-processing", run_state=RunState.PAUSED) == 20  # nothing changed

    limited = cli(
        *app,
        "runs",
        "bulk",
        "resume",
        "--run-state",
        "paused",
        "--limit",
        "5",
        "--json",
        db=pg_database,
        broker=broker_url,
    )
    assert json.loads(limited.stdout) | {"first_refused": [], "first_failed": []} == {
        "workflow": "order-processing", "action": "resume", "matched": 5, "changed": 5, "refused": 0, "failed": 0,
        "first_refused": [], "first_failed": [],
    }  # fmt: skip
    assert store.count_runs("order-processing", run_state=RunState.PAUSED) == 15

    done = cli(*app, "runs", "bulk", "resume", "--run-state", "paused", db=pg_database, broker=broker_url)
    assert done.returncode == 0, done.stderr
    assert "resume: 15 of 15 run(s) of order-processing changed, 0 refused, 0 failed" in done.stdout
    assert store.count_runs("order-processing", run_state=RunState.PAUSED) == 0

    # Cancelling every run still at CREATED: the five never paused are initiated, which may not be cancelled.
    cancel = cli(
        *app,
        "runs",
        "bulk",
        "cancel",
        "--status",
        "created",
        "--reason",
        "bad batch",
        db=pg_database,
        broker=broker_url,
    )
    assert cancel.returncode == 0, cancel.stderr
    assert "cancel: 20 of 25 run(s) of order-processing changed, 5 refused, 0 failed" in cancel.stdout
    assert cancel.stdout.count("  refused ") == 5 and "INITIATED" in cancel.stdout
    assert store.count_runs("order-processing", run_state=RunState.CANCELLED) == 20

    bad = cli(*app, "runs", "bulk", "resume", "--status", "nowhere", db=pg_database, broker=broker_url)
    assert bad.returncode == 1 and "unknown status 'nowhere'" in bad.stderr


@pytest.mark.parametrize("broker", ["redis"])
def test_status_and_graph(
    orders: Workflow[Order, OrderStatus], store: SQLStore, pg_database: str, broker_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        orders.trigger(f"s-{i}", initial_value=Order(id=f"s-{i}", items=["a"], total=1))
    status = cli("-A", "examples.orders", "status", "--json", db=pg_database, broker=broker_url)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    [wf] = report["workflows"]
    assert wf["workflow"] == "order-processing" and wf["runs"] == {"INITIATED": 3}
    created = next(lag for lag in wf["lag"] if lag["queue"] == "order-processing.created")
    assert created["waiting"] == 3 and created["alert"] is False
    assert wf["stranded_runs"] == 0 and wf["schedules"] == 0
    [st] = report["stores"]
    assert st["outbox_pending"] >= 3 and st["dead_letters"] == 0
    text = cli("-A", "examples.orders", "status", db=pg_database, broker=broker_url)
    assert "workflow order-processing: runs 3 initiated" in text.stdout
    assert "order-processing.created: 3 waiting" in text.stdout and "dead letters: 0" in text.stdout

    queues = json.loads(cli("-A", "examples.orders", "queues", "--json", db=pg_database, broker=broker_url).stdout)
    assert queues["order-processing"][0] == "order-processing.created"
    graph = cli("-A", "examples.orders", "graph", db=pg_database, broker=broker_url)
    assert graph.stdout == orders.visualise().rstrip() + "\n\n"
    out = cli("-A", "examples.orders", "graph", "--out", str(tmp_path / "g"), db=pg_database, broker=broker_url)
    written = tmp_path / "g" / "order-processing.md"
    assert out.stdout == f"wrote {written}\n"
    assert written.read_text() == f"# order-processing\n\n```mermaid\n{orders.visualise().rstrip()}\n```\n"
