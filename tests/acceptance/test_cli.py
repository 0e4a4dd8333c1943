"""Acceptance: the ``workflow-celery`` command as a subprocess, on a real PostgreSQL database."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import PG_ADMIN_URL, ROOT
from tests.acceptance.failapp import OPTIONS, Task
from tests.acceptance.failapp import builder as fail_builder
from workflow_celery import InProcessBroker, RunState, SQLStore, Workflow
from workflow_celery.cli import describe

COMMAND = str(Path(sys.executable).with_name("workflow-celery"))  # the installed console script


def cli(*args: str, db: str, broker: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "WORKFLOW_CELERY_TRACEBACK"},
        "WORKFLOW_CELERY_DATABASE_URL": db,
        "CELERY_BROKER_URL": broker,
        **(env or {}),
    }
    return subprocess.run(
        [COMMAND, *args],
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
    shown = sa.make_url(pg_database).render_as_string(hide_password=True)
    as_json = json.loads(cli("db", "current", "--json", db=pg_database, broker=broker_url).stdout)
    revision = cur.stdout.strip()
    assert as_json == {"databases": [{"url": shown, "revision": revision, "head": revision, "at_head": True}]}
    again = json.loads(cli("db", "upgrade", "--url", pg_database, "--json", db=pg_database, broker=broker_url).stdout)
    assert again == as_json
    both = cli("db", "upgrade", "--sql", "--json", db=pg_database, broker=broker_url)
    assert (both.returncode, both.stdout) == (1, "") and "cannot go together" in both.stderr


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
    page = json.loads(listed.stdout)
    assert [(r["run_id"], r["reason"]) for r in page["runs"]] == [(ids[0], "fraud check")]
    assert page["total"] == 1 and page["offset"] == 0 and page["limit"] == 25

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
    assert "record_pause: 1 failed attempt(s), still failing, will retry" in show.stdout
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


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("workflow-celery") and ": error: " in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def test_every_error_is_one_line(pg_database: str, broker_url: str, tmp_path: Path) -> None:
    server = PG_ADMIN_URL.rsplit("/", 1)[0]
    sqlite = f"sqlite:///{tmp_path / 'empty.db'}"
    cases: list[tuple[tuple[str, ...], str, int, str]] = [
        # (arguments, database of the environment, exit status, what the line says)
        (("db", "upgrade", "--url", f"{server}/nonexistent"), pg_database, 1, 'database "nonexistent" does not exist'),
        (("db", "current", "--url", "postgresql+psycopg://127.0.0.1:1/x"), pg_database, 1, "Connection refused"),
        (("db", "current", "--url", "no-url"), pg_database, 1, "not a database URL: 'no-url'"),
        (("-A", "examples.orders", "runs", "list"), "postgresql+psycopg://127.0.0.1:1/x", 1, "Connection refused"),
        (
            ("-A", "tests.acceptance.failapp", "runs", "list"),
            pg_database,
            1,
            f"run `workflow-celery db upgrade --url {pg_database}`",
        ),
        (("-A", "tests.acceptance.failapp", "runs", "show", "abc"), sqlite, 1, f"db upgrade --url {sqlite}`"),
        (("-A", "examples.orders", "runs", "show", "0000"), pg_database, 1, "run '0000' not found"),
        (("-A", "examples.orders", "runs", "resume", "--foreign-id", "nobody"), pg_database, 1, "foreign id 'nobody'"),
        (
            ("-A", "examples.orders", "runs", "show", "--foreign-id", "x", "--workflow", "nope"),
            pg_database,
            1,
            "'nope'",
        ),
        (("-A", "no.such.module", "runs", "list"), pg_database, 1, "cannot import 'no.such.module'"),
        (("-A", "tests.acceptance.helpers", "queues"), pg_database, 1, "builds no workflow"),
        (("-A", "examples.orders", "runs", "list", "--limit", "0"), pg_database, 2, "must be 1 or more, got 0"),
        (("-A", "examples.orders", "runs", "show"), pg_database, 2, "one of the arguments run_id --foreign-id"),
        (("-A", "examples.orders", "runs", "stop", "x"), pg_database, 2, "invalid choice: 'stop'"),
        (("db", "upgrade", "--bogus"), pg_database, 2, "unrecognized arguments: --bogus"),
    ]
    for args, db, code, expected in cases:
        line = _one_line_error(cli(*args, db=db, broker=broker_url), code)
        assert expected in line, (args, line)


def test_traceback_on_request(broker_url: str) -> None:
    unreachable = "postgresql+psycopg://127.0.0.1:1/x"
    for proc in [
        cli("--traceback", "db", "current", "--url", unreachable, db=unreachable, broker=broker_url),
        cli("db", "current", db=unreachable, broker=broker_url, env={"WORKFLOW_CELERY_TRACEBACK": "1"}),
    ]:
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" in proc.stderr and "OperationalError" in proc.stderr


def test_runs_are_named_by_run_id_prefix_or_foreign_id(
    orders: Workflow[Order, OrderStatus], store: SQLStore, pg_database: str, broker_url: str
) -> None:
    # 17 runs: at least two of their ids share a first character (16 hex digits).
    ids = [orders.trigger(f"p-{i}", initial_value=Order(id=f"p-{i}", items=["a"], total=1)) for i in range(17)]
    first = ids[0]
    unique = next(first[:n] for n in range(1, 37) if sum(r.startswith(first[:n]) for r in ids) == 1)
    shown = cli("-A", "examples.orders", "runs", "show", unique, db=pg_database, broker=broker_url)
    assert shown.returncode == 0, shown.stderr
    assert f"run_id:       {first}" in shown.stdout

    shared = next(c for c in "0123456789abcdef" if sum(r.startswith(c) for r in ids) >= 2)
    ambiguous = cli("-A", "examples.orders", "runs", "pause", shared, db=pg_database, broker=broker_url)
    count = sum(r.startswith(shared) for r in ids)
    line = _one_line_error(ambiguous)
    assert f"run id prefix '{shared}' matches {count} runs" in line
    assert all(store.lookup(r).run_state == RunState.INITIATED for r in ids)

    paused = cli(
        "-A",
        "examples.orders",
        "runs",
        "pause",
        "--foreign-id",
        "p-3",
        "--reason",
        "x",
        db=pg_database,
        broker=broker_url,
    )
    assert paused.returncode == 0, paused.stderr
    assert f"run {ids[3]} (p-3): INITIATED -> PAUSED" in paused.stdout
    orders.cancel(ids[3], "replaced")
    newer = orders.trigger("p-3", initial_value=Order(id="p-3", items=["b"], total=2))
    latest = cli(
        "-A", "examples.orders", "runs", "show", "--foreign-id", "p-3", "--json", db=pg_database, broker=broker_url
    )
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["run_id"] == newer


def test_a_listing_says_how_many_runs_match(
    orders: Workflow[Order, OrderStatus], pg_database: str, broker_url: str
) -> None:
    ids = [orders.trigger(f"n-{i}", initial_value=Order(id=f"n-{i}", items=["a"], total=1)) for i in range(30)]
    for run_id in ids[:4]:
        orders.pause(run_id, "check")

    def listing(*args: str) -> str:
        proc = cli("-A", "examples.orders", "runs", "list", *args, db=pg_database, broker=broker_url)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert listing("--limit", "10").splitlines()[-1] == "(1-10 of 30 runs of order-processing; --offset 10 for more)"
    assert listing("--limit", "10", "--offset", "25").splitlines()[-1] == "(26-30 of 30 runs of order-processing)"
    assert listing("--offset", "40").splitlines()[-1] == "(none of 30 runs of order-processing from --offset 40)"
    assert listing("--run-state", "paused", "--limit", "3").splitlines()[-1] == (
        "(1-3 of 4 runs of order-processing; --offset 3 for more)"
    )
    assert listing("--run-state", "paused").splitlines()[-1] == "(4 runs of order-processing)"
    page = json.loads(listing("--limit", "5", "--json"))
    assert page["total"] == 30 and len(page["runs"]) == 5
    assert [r["run_id"] for r in page["runs"]] == ids[::-1][:5]


TWO_WORKFLOWS = """
import enum
import os
from dataclasses import dataclass

from celery import Celery

from workflow_celery import Builder, SQLStore


class Step(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    END = 2


@dataclass
class Item:
    name: str = ""


def workflows(app, store):
    built = []
    for name in ("alpha", "beta"):
        b = Builder(name, Item, Step)
        b.add_step(Step.START, lambda run: Step.END, Step.END)
        built.append(b.build(app, store))
    return built


app = Celery("two")
store = SQLStore(os.environ["WORKFLOW_CELERY_DATABASE_URL"])
workflows(app, store)
"""


def test_a_foreign_id_in_several_workflows_needs_one_named(
    tmp_path: Path, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "twoflows.py").write_text(TWO_WORKFLOWS)
    url = f"sqlite:///{tmp_path / 'two.db'}"
    monkeypatch.setenv("WORKFLOW_CELERY_DATABASE_URL", url)
    spec = importlib.util.spec_from_file_location("twoflows_here", tmp_path / "twoflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.store.create_schema()
    alpha, beta = module.workflows(InProcessBroker(), module.store)  # the same two, to trigger runs from here
    shared_a, shared_b = alpha.trigger("shared"), beta.trigger("shared")
    only_a = alpha.trigger("only-a")
    env = {"PYTHONPATH": str(tmp_path)}

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("-A", "twoflows", "runs", "show", *args, "--json", db=url, broker=broker_url, env=env)

    line = _one_line_error(show("--foreign-id", "shared"))
    assert "foreign id 'shared' has runs in 2 workflows (alpha, beta): choose one with --workflow" in line
    assert json.loads(show("--foreign-id", "shared", "--workflow", "beta").stdout)["run_id"] == shared_b
    assert json.loads(show("--foreign-id", "only-a").stdout)["run_id"] == only_a
    assert json.loads(show(shared_a[:12]).stdout)["workflow"] == "alpha"
    assert "belongs to workflow 'alpha', not beta" in _one_line_error(show(shared_a, "--workflow", "beta"))
    module.store.dispose()


def test_a_reader_that_stops_early_is_not_an_error(
    orders: Workflow[Order, OrderStatus], pg_database: str, broker_url: str
) -> None:
    orders.trigger("pipe-1", initial_value=Order(id="pipe-1", items=["a"], total=1))
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    proc = subprocess.Popen(
        [COMMAND, "-A", "examples.orders", "runs", "list"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -0`: every write finds the pipe closed
    with proc.stderr:
        # 0, as when the output fitted in the pipe before the reader left: the status must not depend on timing.
        assert proc.wait(60) == 0
        assert proc.stderr.read() == ""


def test_a_database_error_is_described_without_its_statement(pg_database: str) -> None:
    engine = sa.create_engine(pg_database)
    try:
        with pytest.raises(sa.exc.DBAPIError) as failed, engine.connect() as conn:
            conn.execute(sa.text("SELECT secret_column FROM pg_class WHERE"))
    finally:
        engine.dispose()
    assert "secret_column" in str(failed.value)
    assert describe(failed.value) == "database error: syntax error at end of input"
