"""Acceptance: retries, pausing, lost messages, restarts and crashes on real workers."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.acceptance.conftest import Worker
from tests.acceptance.failapp import OPTIONS, Stage, Task
from tests.acceptance.failapp import builder as fail_builder
from tests.acceptance.helpers import client_app, marks, wait_all_finished, wait_until
from tests.acceptance.killapp import REDELIVER_AFTER, Job, Step
from tests.acceptance.killapp import builder as kill_builder
from workflow_celery import RunState, SQLStore, Workflow

APP = "tests.acceptance.failapp"


def flaky(broker_url: str, store: SQLStore) -> Workflow[Task, Stage]:
    return fail_builder().build(client_app(broker_url), store, **OPTIONS)


def test_failing_twice_then_succeeding_completes_with_growing_delays(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    worker = start_worker(APP, "flaky-steps.*", concurrency=1)
    run_id = wf.trigger("t-1", initial_value=Task(marker_dir=str(tmp_path), fail_times=2))
    seen_counts: set[int] = set()

    def finished() -> bool:
        seen_counts.update(e.count for e in store.errors(run_id))
        return store.lookup(run_id).run_state.finished

    wait_until(finished, 60, "the run to finish")
    assert store.lookup(run_id).run_state == RunState.COMPLETED
    attempts = [m["t"] for m in marks(tmp_path, "attempt", run_id)]
    assert len(attempts) == 3
    first_wait, second_wait = attempts[1] - attempts[0], attempts[2] - attempts[1]
    print(f"delays between attempts: {first_wait:.2f}s, {second_wait:.2f}s")
    assert second_wait > first_wait >= 0.7  # err_backoff 1s: ~1s then ~2s (jittered, relay ticks every 1s)
    assert 2 in seen_counts  # the database counter reached 2 while the step was failing
    assert store.errors(run_id) == []  # and was reset when the run moved on
    out = worker.output()
    assert out.count(f"failed for run {run_id}") == 2
    assert "attempt 1" in out and "attempt 2" in out


def test_pause_after_three_errors_then_resume_and_complete(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    start_worker(APP, "flaky-steps.*", concurrency=1, env={"WFC_PAUSE_AFTER": "3"})
    run_id = wf.trigger("p-1", initial_value=Task(marker_dir=str(tmp_path), fail_times=-1))
    wait_until(lambda: store.lookup(run_id).run_state == RunState.PAUSED, 60, "the run to pause")
    rec = store.lookup(run_id)
    assert rec.meta.run_state_reason.startswith("max error retry threshold hit")
    assert "attempt 3" in rec.meta.run_state_reason
    [errors] = store.errors(run_id)
    assert errors.count == 3 and "payment gateway unavailable (attempt 3)" in errors.last_error.message
    time.sleep(3)
    assert len(marks(tmp_path, "attempt", run_id)) == 3  # nothing runs while paused
    (tmp_path / "switch").touch()
    wf.resume(run_id)
    wait_all_finished(wf, [run_id], 60)
    assert store.lookup(run_id).run_state == RunState.COMPLETED
    assert len(marks(tmp_path, "attempt", run_id)) == 4


def contiguous_once(store: SQLStore, run_id: str, flow: list[int]) -> None:
    history = store.history(run_id)
    assert [h.version for h in history] == list(range(1, len(history) + 1)), run_id
    assert [h.status for h in history] == flow, run_id
    assert sum(h.run_state == RunState.COMPLETED for h in history) == 1, run_id


def completed(store: SQLStore, limit: int) -> int:
    return len(store.list_runs("flaky-steps", run_state=RunState.COMPLETED, limit=limit))


def load_in_flight(
    wf: Workflow[Task, Stage], store: SQLStore, marker_dir: Path, *, runs: int, step_sleep: float, started: int
) -> list[str]:
    """Trigger ``runs`` runs and return once ``started`` of them have completed: the rest are in flight."""
    run_ids = [
        wf.trigger(f"load-{i}", initial_value=Task(marker_dir=str(marker_dir), step_sleep=step_sleep))
        for i in range(runs)
    ]
    wait_until(lambda: completed(store, runs) >= started, 60, "some runs to complete")
    return run_ids


@pytest.mark.parametrize("broker", ["redis"])  # empties a Redis database: the loss of every message
def test_redis_flushed_while_300_runs_are_in_flight(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    start_worker(APP, "flaky-steps.*", concurrency=2)
    run_ids = load_in_flight(wf, store, tmp_path, runs=300, step_sleep=0.02, started=20)
    redis.Redis.from_url(broker_url).flushdb()  # every queued and unacknowledged message is gone
    done_before = completed(store, 300)
    assert done_before < 300, "the flush came too late to lose anything"
    elapsed = wait_all_finished(wf, run_ids, timeout=180)
    print(f"{300 - done_before} runs in flight at the flush; all 300 completed {elapsed:.1f}s later")
    for run_id in run_ids:
        contiguous_once(store, run_id, [Stage.START, Stage.MIDDLE, Stage.DONE])


def _postgres_restart() -> None:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no local PostgreSQL cluster to restart"
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_postgres_restarted_while_runs_are_in_flight(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    start_worker(APP, "flaky-steps.*", concurrency=2)
    run_ids = load_in_flight(wf, store, tmp_path, runs=200, step_sleep=0.05, started=10)
    _postgres_restart()
    for _ in range(3):  # the pool's connections died with the server: the first calls fail, then it reconnects
        try:
            store.lookup(run_ids[0])
            break
        except Exception:
            time.sleep(1)
    elapsed = wait_all_finished(wf, run_ids, timeout=180)
    print(f"all 200 runs completed {elapsed:.1f}s after PostgreSQL came back")
    for run_id in run_ids:
        contiguous_once(store, run_id, [Stage.START, Stage.MIDDLE, Stage.DONE])


def test_workers_killed_repeatedly_during_500_runs(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = kill_builder().build(client_app(broker_url), store, redeliver_after=REDELIVER_AFTER)
    start_worker("tests.acceptance.killapp", "slow-steps.*", concurrency=1, name="steady")
    victim = start_worker("tests.acceptance.killapp", "slow-steps.*", concurrency=2, name="victim-0")
    run_ids = [wf.trigger(f"k-{i}", initial_value=Job(marker_dir=str(tmp_path), sleep=0.03)) for i in range(500)]
    for round_ in range(3):
        time.sleep(2)
        victim.kill_hard()
        victim = start_worker("tests.acceptance.killapp", "slow-steps.*", concurrency=2, name=f"victim-{round_ + 1}")
    elapsed = wait_all_finished(wf, run_ids, timeout=240)
    print(f"500 runs completed despite 3 SIGKILLs, {elapsed:.1f}s after the last restart")
    for run_id in run_ids:
        history = store.history(run_id)
        assert [h.version for h in history] == [1, 2, 3], run_id
        assert [h.status for h in history] == [Step.START, Step.WORKED, Step.DONE], run_id
        assert sum(h.run_state == RunState.COMPLETED for h in history) == 1


def test_parallel_count_limits_a_step_across_workers(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    for _ in range(2):
        start_worker(APP, "flaky-steps.*", concurrency=2, env={"WFC_PARALLEL": "1"})
    run_ids = [wf.trigger(f"par-{i}", initial_value=Task(marker_dir=str(tmp_path), step_sleep=0.3)) for i in range(6)]
    wait_all_finished(wf, run_ids, timeout=120)
    starts = sorted(m["t"] for r in run_ids for m in marks(tmp_path, "attempt", r))
    assert len(starts) == 6
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"gaps between step starts with parallel_count=1 on 4 processes: {[round(g, 2) for g in gaps]}")
    assert min(gaps) >= 0.29  # never two executions of the step at once
    assert len({m["pid"] for r in run_ids for m in marks(tmp_path, "attempt", r)}) > 1  # several processes took part


def test_a_step_over_the_soft_time_limit_is_a_failed_attempt(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    start_worker(
        APP, "flaky-steps.*", concurrency=1, env={"WFC_PAUSE_AFTER": "2", "WORKFLOW_CELERY_TASK_SOFT_TIME_LIMIT": "1"}
    )
    run_id = wf.trigger("slow-1", initial_value=Task(marker_dir=str(tmp_path), step_sleep=5))
    wait_until(lambda: store.lookup(run_id).run_state == RunState.PAUSED, 60, "the run to pause")
    [errors] = store.errors(run_id)
    assert errors.count == 2 and errors.last_error.error_type.endswith("SoftTimeLimitExceeded")
    assert len(marks(tmp_path, "attempt", run_id)) == 2
