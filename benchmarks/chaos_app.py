"""The workflow of the chaos soak: three steps that record every execution of themselves.

    celery -A benchmarks.chaos_app worker -Q 'chaos-soak.*'

Each step writes a row to ``chaos_executions`` when it starts and stamps it
when it ends (both with the database's clock), on a connection of its own, so
the soak can tell afterwards whether two executions of one step of one run
ever overlapped. The run's object lists the steps applied to it: a transition
committed twice would list one twice.

``WORKFLOW_CELERY_DATABASE_URL`` names the database; ``CHAOS_REDELIVER_AFTER``
(seconds, default 3) is the workflow's ``redeliver_after``.
"""

from __future__ import annotations

import enum
import os
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from celery import Celery

import benchmarks.worker_hooks  # noqa: F401  (tells the driver when the worker consumes)
import celeryconfig
from workflow_celery import Builder, Run, SQLStore, Workflow

EXECUTIONS_DDL = """
CREATE TABLE IF NOT EXISTS chaos_executions (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    status integer NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
)
"""


class Stage(enum.IntEnum):
    UNKNOWN = 0
    CREATED = 1
    FIRST = 2
    SECOND = 3
    DONE = 4


@dataclass
class Trace:
    steps: list[str] = field(default_factory=list)


class _Executions:
    """This process's connection to the executions table (reopened after a database restart)."""

    def __init__(self, url: str) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://")
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    def run(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            cursor = self._connection().execute(sql, params)
            row = cursor.fetchone() if cursor.description is not None else None
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            raise
        return None if row is None else row[0]


_executions = _Executions(celeryconfig.workflow_database_url)


def _step(name: str, to: Stage) -> Any:
    def step(run: Run[Trace, Stage]) -> Stage:
        execution = _executions.run(
            "INSERT INTO chaos_executions (run_id, status, pid) VALUES (%s, %s, %s) RETURNING id",
            (run.run_id, int(run.status), os.getpid()),
        )
        time.sleep(random.uniform(0.0, 0.02))  # a window in which a second execution would overlap
        run.object.steps.append(name)
        _executions.run("UPDATE chaos_executions SET ended_at = clock_timestamp() WHERE id = %s", (execution,))
        return to

    step.__name__ = name
    return step


def chaos_workflow() -> Builder[Trace, Stage]:
    b = Builder("chaos-soak", Trace, Stage)
    b.add_step(Stage.CREATED, _step("first", Stage.FIRST), Stage.FIRST)
    b.add_step(Stage.FIRST, _step("second", Stage.SECOND), Stage.SECOND)
    b.add_step(Stage.SECOND, _step("done", Stage.DONE), Stage.DONE)
    return b


app = Celery("chaos-soak")
app.config_from_object("celeryconfig")
store = SQLStore(celeryconfig.workflow_database_url)
wf: Workflow[Trace, Stage] = chaos_workflow().build(
    app,
    store,
    redeliver_after=timedelta(seconds=float(os.environ.get("CHAOS_REDELIVER_AFTER", "3"))),
    max_redeliver_interval=timedelta(seconds=10),
    err_backoff=timedelta(milliseconds=200),
    max_backoff=timedelta(seconds=5),
)
