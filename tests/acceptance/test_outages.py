"""Acceptance: a broker that stops answering, and a database that closes its connections, hang no caller."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tests.acceptance.conftest import PG_ADMIN_URL, Worker
from tests.acceptance.helpers import client_app, marks, wait_all_finished, wait_until
from tests.acceptance.outageapp import OPTIONS, Job, Stage, builder
from workflow_celery import RunState, SQLStore

APP = "tests.acceptance.outageapp"
PUBLISH_TIMEOUT_S = 1.0  # the default publish_timeout
CALL_BOUND_S = 2 * PUBLISH_TIMEOUT_S  # what docs/runs.md promises for a broker that accepts connections only
PAUSE_S = 15.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own, on a free port, that the test may freeze; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=data,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: _answers(client), 10, "the private redis-server to start")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.ConnectionError):
        return bool(client.ping())
    return False


def test_a_frozen_broker_never_holds_a_caller_and_the_relay_catches_up(
    private_redis: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    start_worker(APP, "outage.*", env={"CELERY_BROKER_URL": private_redis})
    wf = builder().build(client_app(private_redis), store, **OPTIONS)
    d = str(tmp_path)
    answer = wf.trigger("answer", initial_value=Job(marker_dir=d, wait=True))
    pause = wf.trigger("pause", initial_value=Job(marker_dir=d, wait=True))
    cancel = wf.trigger("cancel", initial_value=Job(marker_dir=d, wait=True))
    resume = wf.trigger("resume", initial_value=Job(marker_dir=d, hold=True))
    wait_until(
        lambda: (
            all(store.lookup(r).status == Stage.WAITING for r in (answer, pause, cancel))
            and store.lookup(resume).run_state == RunState.PAUSED
        ),
        60,
        "the runs to wait at WAITING and the held one to pause",
    )

    # Redis keeps accepting connections and reading commands, and answers none of them.
    redis.Redis.from_url(private_redis).execute_command("CLIENT", "PAUSE", int(PAUSE_S * 1000), "ALL")
    frozen_at = time.monotonic()
    took: dict[str, float] = {}

    def timed(name: str, call: Callable[[], object]) -> object:
        start = time.monotonic()
        result = call()
        took[name] = time.monotonic() - start
        return result

    new = str(timed("trigger", lambda: wf.trigger("new", initial_value=Job(marker_dir=d))))
    timed("callback", lambda: wf.callback("answer", Stage.WAITING, b"go"))
    timed("pause", lambda: wf.pause(pause, "by hand"))
    timed("resume", lambda: wf.resume(resume))
    timed("cancel", lambda: wf.cancel(cancel, "by hand"))
    assert time.monotonic() - frozen_at < PAUSE_S, "the broker thawed before the calls were made"
    print("while Redis answered nothing:", ", ".join(f"{k} {v:.2f}s" for k, v in took.items()))
    assert all(seconds < CALL_BOUND_S for seconds in took.values()), took

    # Every change is committed, whatever the broker did.
    assert (store.lookup(new).run_state, store.lookup(new).status) == (RunState.INITIATED, Stage.START)
    assert store.lookup(answer).run_state == RunState.COMPLETED
    assert store.lookup(pause).run_state == RunState.PAUSED
    assert store.lookup(resume).run_state == RunState.RUNNING
    assert store.lookup(cancel).run_state == RunState.CANCELLED

    # Once Redis answers again the relay publishes what the callers could not, and a worker does the rest.
    wait_all_finished(wf, [new, resume], 90)
    assert store.lookup(resume).status == Stage.DONE
    wait_until(
        lambda: (
            all(marks(tmp_path, "hook-complete", r) for r in (new, answer, resume))
            and bool(marks(tmp_path, "hook-pause", pause))
            and bool(marks(tmp_path, "hook-cancel", cancel))
        ),
        60,
        "the hooks of every change",
    )
    print(f"all done {time.monotonic() - frozen_at:.1f}s after the broker froze for {PAUSE_S:.0f}s")


def _close_connections_of(database: str) -> int:
    """Have PostgreSQL close every connection to ``database`` (the test's own); return once they are closed."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            # Chosen first, in a materialized CTE: a condition on pid alone may otherwise be evaluated
            # before the one on the database, on the backends of every database of the server.
            pids = [
                pid
                for pid, closed in conn.execute(
                    sa.text(
                        "WITH chosen AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()) "
                        "SELECT pid, pg_terminate_backend(pid) FROM chosen"
                    ),
                    {"db": database},
                )
                if closed
            ]
            wait_until(
                lambda: (
                    not conn.execute(
                        sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": pids}
                    ).scalar_one()
                ),
                10,
                "the closed backends to exit",
            )
            return len(pids)
    finally:
        admin.dispose()


def test_postgres_closing_every_connection_fails_no_call_and_stops_no_worker(
    broker_url: str, store: SQLStore, pg_database: str, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = start_worker(APP, "outage.*")
    wf = builder().build(client_app(broker_url), store, **OPTIONS)
    before = [wf.trigger(f"before-{i}", initial_value=Job(marker_dir=str(tmp_path))) for i in range(10)]
    wait_all_finished(wf, before, 60)
    database = sa.make_url(pg_database).database
    assert database is not None
    closed = _close_connections_of(database)
    assert closed >= 3  # this process's, the worker's relay and claims threads', its pool processes'
    after = [wf.trigger(f"after-{i}", initial_value=Job(marker_dir=str(tmp_path))) for i in range(10)]
    wait_all_finished(wf, after, 60)
    wait_until(lambda: all(marks(tmp_path, "hook-complete", r) for r in before + after), 60, "every hook")
    lost = worker.output().count("DatabaseConnectionLost")
    print(f"{closed} connections closed by PostgreSQL; statements that met a closed connection in the worker: {lost}")
