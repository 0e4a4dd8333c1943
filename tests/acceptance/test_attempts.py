"""Acceptance: every attempt counted and visible, on real workers, Redis, PostgreSQL and Flower.

A failed attempt is a Celery retry (RETRY in Flower, ``celery inspect
scheduled`` while it waits), the attempt that pauses a run a FAILURE; a
process that dies is an attempt too; and however many copies of a doorbell
arrive, one process at a time works on it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.attemptsapp import Job, Stage, builder, options
from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import client_app, marks, wait_until
from workflow_celery import RunState, SQLStore, Workflow

APP = "tests.acceptance.attemptsapp"


def attempts(broker_url: str, store: SQLStore) -> Workflow[Job, Stage]:
    return builder().build(client_app(broker_url), store, **options())


class Flower:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def get(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def tasks(self, search: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.get("/api/tasks", search=search)
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def flower(broker_url: str, pg_database: str, tmp_path: Path) -> Iterator[Flower]:
    """Flower started as its docs say, against the test's broker, with its HTTP API open."""
    port = _free_port()
    log = tmp_path / "flower.log"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "WORKFLOW_CELERY_DATABASE_URL": pg_database,
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    cmd = [sys.executable, "-m", "celery", "-A", APP, "flower", f"--port={port}", "--address=127.0.0.1"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    f = Flower(proc, port, log)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(healthy, 60, "Flower to answer")
    yield f
    proc.terminate()
    proc.wait(20)


def attempt_rows(tasks: dict[str, dict[str, Any]], run_id: str, version: int = 1) -> list[dict[str, Any]]:
    """The Flower rows of the attempts at the step doorbell ``{run_id}.{version}``, in attempt order."""
    rows: list[dict[str, Any]] = []
    for n in itertools.count(1):
        row = tasks.get(f"{run_id}.{version}-attempt-{n}")
        if row is None:
            return rows
        rows.append(row)
    raise AssertionError("unreachable")


def test_flower_shows_every_attempt_retries_failure_and_finds_a_run_by_foreign_id(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], flower: Flower, tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    worker = start_worker(APP, "attempts.*", concurrency=1, env={"WFC_PAUSE_AFTER": "3"})
    flaky = wf.trigger("order-flaky", initial_value=Job(marker_dir=str(tmp_path), fail_times=2))
    broken = wf.trigger("order-broken", initial_value=Job(marker_dir=str(tmp_path), fail_times=-1))
    wait_until(lambda: store.lookup(flaky).run_state == RunState.COMPLETED, 60, "the flaky run to complete")
    wait_until(lambda: store.lookup(broken).run_state == RunState.PAUSED, 60, "the broken run to pause")

    def states(run_id: str, foreign_id: str) -> list[str]:
        return [row["state"] for row in attempt_rows(flower.tasks(f"kwargs:foreign_id={foreign_id}"), run_id)]

    wait_until(lambda: states(flaky, "order-flaky") == ["RETRY", "RETRY", "SUCCESS"], 60, "Flower to see 3 attempts")
    wait_until(lambda: states(broken, "order-broken") == ["RETRY", "RETRY", "FAILURE"], 60, "the pause in Flower")

    rows = attempt_rows(flower.tasks("kwargs:foreign_id=order-flaky"), flaky)
    print("flaky run in Flower:", [(r["uuid"].rsplit("-", 1)[-1], r["state"], r["retries"]) for r in rows])
    for n, row in enumerate(rows, start=1):
        assert row["name"] == "attempts.start" and row["retries"] == n - 1
        kwargs = row["kwargs"]
        for part in ("'workflow': 'attempts'", "'step': 'START start'", "'foreign_id': 'order-flaky'"):
            assert part in kwargs, kwargs
        assert f"'run_id': '{flaky}'" in kwargs and "'version': 1" in kwargs and f"'attempt': {n}" in kwargs
    for n, row in enumerate(rows[:2], start=1):
        assert "ConnectionError" in row["exception"] and f"attempt {n})" in row["exception"], row
    assert rows[2]["result"] == "'completed'"

    rows = attempt_rows(flower.tasks("kwargs:foreign_id=order-broken"), broken)
    assert "ConnectionError" in rows[2]["exception"] and "attempt 3" in rows[2]["exception"]
    # Plain text finds a run's tasks too, and only that run's.
    found = flower.tasks("order-broken")
    assert found and all("order-broken" in row["kwargs"] for row in found.values())
    failed = flower.get("/api/tasks", state="FAILURE")
    assert list(failed) == [f"{broken}.1-attempt-3"]
    assert len(marks(tmp_path, "attempt", flaky)) == 3 and len(marks(tmp_path, "attempt", broken)) == 3
    # The retries went through Celery, never the relay: each attempt ran once.
    assert "outbox relay published" not in worker.output()


# Redis keeps the retry a dead worker held until its visibility_timeout: lost for an hour. RabbitMQ gives
# it back when the worker's connection drops, so there is nothing to ring from the database.
@pytest.mark.parametrize("broker", ["redis"])
def test_a_near_retry_waits_in_celery_and_a_lost_one_is_rung_from_the_database(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    env = {"WFC_ERR_BACKOFF": "8", "WFC_REDELIVER_AFTER": "2"}
    worker = start_worker(APP, "attempts.*", concurrency=1, env=env)
    run_id = wf.trigger("near-1", initial_value=Job(marker_dir=str(tmp_path), fail_times=1))
    wait_until(lambda: bool(store.errors(run_id)), 30, "the first attempt to fail")
    inspect = client_app(broker_url).control.inspect(timeout=5)

    def scheduled() -> list[str]:
        return [s["request"]["id"] for found in (inspect.scheduled() or {}).values() for s in found]

    wait_until(lambda: f"{run_id}.1-attempt-2" in scheduled(), 20, "celery inspect scheduled to list the retry")
    [row] = store.outbox(run_id)
    assert row.retries == 1
    # The worker holding the retry dies with it: Redis would give the message back only after its
    # visibility_timeout. The database still has the doorbell, due once the retry is overdue.
    worker.kill_hard()
    start_worker(APP, "attempts.*", concurrency=1, env=env)
    wait_until(lambda: store.lookup(run_id).run_state == RunState.COMPLETED, 60, "the run to complete")
    starts = [m["t"] for m in marks(tmp_path, "attempt", run_id)]
    assert len(starts) == 2
    print(f"lost retry rung from the database {starts[1] - starts[0]:.1f}s after the failed attempt")
    assert starts[1] - starts[0] >= 6  # not before the backoff (8 s, jittered down to 6 s at most)


def test_a_far_retry_waits_in_the_database_only(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    worker = start_worker(APP, "attempts.*", concurrency=1, env={"WFC_ERR_BACKOFF": "4", "WFC_MAX_COUNTDOWN": "1"})
    run_id = wf.trigger("far-1", initial_value=Job(marker_dir=str(tmp_path), fail_times=1))
    wait_until(lambda: store.lookup(run_id).run_state == RunState.COMPLETED, 60, "the run to complete")
    out = worker.output()
    assert f"Task attempts.start[{run_id}.1-attempt-1] retry: Retry at" in out, out
    assert "outbox relay published 1 due message(s)" in out  # the second attempt came from the database
    starts = [m["t"] for m in marks(tmp_path, "attempt", run_id)]
    assert len(starts) == 2 and starts[1] - starts[0] >= 3


def test_a_step_that_kills_its_process_is_counted_and_pauses_the_run(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    worker = start_worker(APP, "attempts.*", concurrency=2, env={"WFC_PAUSE_AFTER": "3"})
    started = time.monotonic()
    run_id = wf.trigger("kill-1", initial_value=Job(marker_dir=str(tmp_path), kill=True))
    wait_until(lambda: store.lookup(run_id).run_state == RunState.PAUSED, 90, "the run to pause")
    elapsed = time.monotonic() - started
    time.sleep(3)  # long enough for a runaway redelivery loop to show
    executions = len(marks(tmp_path, "attempt", run_id))
    [counter] = store.errors(run_id)
    print(f"SIGKILL every time: paused after {counter.count} counted attempts, {executions} executions, {elapsed:.1f}s")
    assert counter.count == 3 and counter.last_error.error_type.endswith("AttemptAbandoned")
    assert executions <= 3
    record = store.lookup(run_id)
    assert record.meta.run_state_reason.startswith("max error retry threshold hit: AttemptAbandoned")
    # Nothing rings the step again but the automatic resume, an hour later.
    assert [m.body.get("action") for m in store.outbox(run_id)] == ["resume"]
    out = worker.output()
    assert "WorkerLostError" in out
    # A new pool process after each death must leave the main process' publishing connection alone.
    assert "message(s) failed" not in out, out


def test_a_naive_timer_is_a_failed_attempt_at_its_status(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    start_worker(APP, "attempts.*", concurrency=1, env={"WFC_PAUSE_AFTER": "3"})
    run_id = wf.trigger("naive-1", initial_value=Job(marker_dir=str(tmp_path), wait=True, naive_timer=True))
    wait_until(lambda: store.lookup(run_id).run_state == RunState.PAUSED, 60, "the run to pause")
    record = store.lookup(run_id)
    assert record.status == Stage.WAITING  # the step before it committed
    assert len(marks(tmp_path, "attempt", run_id)) == 1  # and ran once
    [counter] = store.errors(run_id)
    assert counter.status == Stage.WAITING and counter.count == 3
    assert "timezone-aware" in counter.last_error.message and counter.last_error.error_type == "builtins.TypeError"


def test_a_step_holding_the_gil_longer_than_redeliver_after_runs_once(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = attempts(broker_url, store)
    env = {"WFC_REDELIVER_AFTER": "1"}
    start_worker(APP, "attempts.*", concurrency=2, env=env)
    start_worker(APP, "attempts.*", concurrency=2, env=env)
    run_id = wf.trigger("gil-1", initial_value=Job(marker_dir=str(tmp_path), gil_hog=28))
    wait_until(lambda: bool(marks(tmp_path, "attempt", run_id)), 30, "the step to start")
    [bell] = store.outbox(run_id)
    client_app(broker_url).send_task(bell.task, kwargs=dict(bell.body), queue=bell.queue)  # and a copy, for spite
    wait_until(lambda: store.lookup(run_id).run_state == RunState.COMPLETED, 120, "the run to complete")
    starts, ends = marks(tmp_path, "attempt", run_id), marks(tmp_path, "done", run_id)
    assert len(starts) == 1, f"the step ran {len(starts)} times: {starts}"
    [start], [end] = starts, ends
    print(f"a step holding the GIL for {end['t'] - start['t']:.1f}s with redeliver_after=1s ran once")
    assert end["t"] - start["t"] > 3  # several times redeliver_after
