"""Acceptance: a run paused and resumed while its step runs never has that step running twice at once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.attemptsapp import Job
from tests.acceptance.conftest import Worker
from tests.acceptance.helpers import marks, wait_until
from tests.acceptance.test_attempts import APP, attempts
from workflow_celery import RunState, SQLStore

Start = Callable[..., Worker]


def paused_and_resumed_mid_step(
    broker_url: str, store: SQLStore, start_worker: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleep: float
) -> tuple[str, int]:
    """Two workers with two processes each; a run whose step takes ``sleep`` s, paused and resumed as it runs.

    ``redeliver_after`` is a minute, here (where the resume rings) and in the workers, so the relay would
    not ring the step again for that long: whatever rings it sooner is the worker. Returns the run's id and
    the id of the process running its first execution.
    """
    env = {"WFC_REDELIVER_AFTER": "60"}
    monkeypatch.setenv("WFC_REDELIVER_AFTER", "60")
    wf = attempts(broker_url, store)
    for _ in range(2):
        start_worker(APP, "attempts.*", concurrency=2, env=env)
    run_id = wf.trigger(f"paused-{sleep}", initial_value=Job(marker_dir=str(tmp_path), sleep=sleep))
    wait_until(lambda: bool(marks(tmp_path, "attempt", run_id)), 30, "the step to start")
    wf.pause(run_id, "looking at it")
    wf.resume(run_id)  # rings the step again while the first attempt still runs
    return run_id, marks(tmp_path, "attempt", run_id)[0]["pid"]


def completed_starts(store: SQLStore, tmp_path: Path, run_id: str) -> list[float]:
    """When each execution of the run's step started, once the run has completed."""
    wait_until(lambda: store.lookup(run_id).run_state == RunState.COMPLETED, 120, "the run to complete")
    return sorted(m["t"] for m in marks(tmp_path, "attempt", run_id))


def test_pause_and_resume_during_a_step_waits_for_it_before_running_the_step_again(
    broker_url: str, store: SQLStore, start_worker: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = paused_and_resumed_mid_step(broker_url, store, start_worker, tmp_path, monkeypatch, sleep=5.0)
    starts = completed_starts(store, tmp_path, run_id)
    ends = sorted(m["t"] for m in marks(tmp_path, "done", run_id))
    assert len(starts) == 2, f"the step ran {len(starts)} times: {starts}"  # the first one's result was superseded
    assert starts[1] >= ends[0], f"the second execution started {ends[0] - starts[1]:.1f}s before the first ended"
    assert starts[1] - ends[0] < 30, f"the step was rung again {starts[1] - ends[0]:.1f}s after the first ended"
    print(f"the step ran again {starts[1] - ends[0]:.1f}s after the superseded execution ended")


def test_the_step_waiting_for_a_superseded_attempt_runs_soon_after_that_attempt_is_killed(
    broker_url: str, store: SQLStore, start_worker: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, pid = paused_and_resumed_mid_step(broker_url, store, start_worker, tmp_path, monkeypatch, sleep=30.0)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    starts = completed_starts(store, tmp_path, run_id)
    assert len(starts) == 2, starts
    # Not when the relay would ring the waiting doorbell (a minute after the resume): the main process does.
    assert starts[1] - killed_at < 30, f"the step ran again {starts[1] - killed_at:.1f}s after the kill"
    print(f"the step ran again {starts[1] - killed_at:.1f}s after the superseded attempt was killed")
