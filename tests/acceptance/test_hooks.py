"""Acceptance: hooks on their own queues, run by real workers."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import Worker
from tests.acceptance.failapp import OPTIONS, Stage, Task
from tests.acceptance.failapp import builder as fail_builder
from tests.acceptance.helpers import client_app, marks, wait_all_finished, wait_until
from workflow_celery import RunState, SQLStore, Workflow

APP = "tests.acceptance.failapp"


def flaky(broker_url: str, store: SQLStore) -> Workflow[Task, Stage]:
    return fail_builder().build(client_app(broker_url), store, **OPTIONS)


def fired(tmp: Path, run_id: str) -> dict[str, list[dict[str, object]]]:
    return {e: marks(tmp, f"hook-{e}", run_id) for e in ("complete", "cancel", "pause")}


def test_each_change_fires_exactly_the_matching_hook_on_its_own_queue(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    steps = start_worker(
        APP, "flaky-steps.start,flaky-steps.middle", concurrency=1, name="steps", env={"WFC_PAUSE_AFTER": "2"}
    )
    hooks = start_worker(APP, "flaky-steps.hooks.*", concurrency=1, name="hooks")
    d = str(tmp_path)
    completed = wf.trigger("complete", initial_value=Task(marker_dir=d))
    step_cancel = wf.trigger("step-cancel", initial_value=Task(marker_dir=d, cancel=True))
    api_cancel = wf.trigger("api-cancel", initial_value=Task(marker_dir=d, pause=True))
    step_pause = wf.trigger("step-pause", initial_value=Task(marker_dir=d, pause=True))
    manual_pause = wf.trigger("manual-pause", initial_value=Task(marker_dir=d, step_sleep=3))
    error_pause = wf.trigger("error-pause", initial_value=Task(marker_dir=d, fail_times=-1))
    wait_until(lambda: store.lookup(api_cancel).run_state == RunState.PAUSED, 60, "the step to pause the run")
    wf.cancel(api_cancel, "by the api")
    wait_until(lambda: bool(marks(tmp_path, "attempt", manual_pause)), 60, "the slow step to start")
    wf.pause(manual_pause, "by hand")  # while its step runs: the step's result must not overwrite the pause
    wait_until(lambda: store.lookup(error_pause).run_state == RunState.PAUSED, 60, "the error pause")
    expected = {
        completed: ("complete", "COMPLETED", "", 3),
        step_cancel: ("cancel", "CANCELLED", "customer cancelled", 2),
        api_cancel: ("cancel", "CANCELLED", "by the api", 3),
        step_pause: ("pause", "PAUSED", "needs review", 2),
        manual_pause: ("pause", "PAUSED", "by hand", 2),
        error_pause: ("pause", "PAUSED", "max error retry threshold hit", 2),
    }
    wait_until(lambda: all(fired(tmp_path, r)[e] for r, (e, *_) in expected.items()), 60, "every hook")
    for run_id, (event, state, reason, version) in expected.items():
        got = fired(tmp_path, run_id)
        assert len(got[event]) == 1, (run_id, got)
        assert [k for k, v in got.items() if v] == [event] or event == "cancel", got
        [mark] = got[event]
        assert mark["run_state"] == state and str(mark["reason"]).startswith(reason) and mark["version"] == version
    # api_cancel was paused by its step first: it fired on_pause (v2) and then on_cancel (v3)
    assert [m["version"] for m in fired(tmp_path, api_cancel)["pause"]] == [2]
    assert store.lookup(manual_pause).status == Stage.START  # the slow step finished after the pause: discarded
    assert not re.search(r"flaky-steps\.hooks\.\w+\[", steps.output())  # no hook ran on the steps worker
    hook_out = hooks.output()
    for queue in ("completed", "cancelled", "paused"):
        assert re.search(rf"flaky-steps\.hooks\.{queue}\[.*\] succeeded", hook_out), queue
    assert "flaky-steps.start[" not in hook_out


def test_failing_hook_is_retried_with_growing_delays_and_counted(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    start_worker(
        APP,
        "flaky-steps.*",
        concurrency=2,
        env={
            "WORKFLOW_CELERY_METRICS_PORT": "19187",
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        },
    )
    (tmp_path / "m").mkdir()
    run_id = wf.trigger("hf-1", initial_value=Task(marker_dir=str(tmp_path / "m"), hook_fail_times=2))
    wait_all_finished(wf, [run_id], 60)
    before = store.lookup(run_id)
    states: set[int] = set()

    def hook_done() -> bool:
        states.update(e.count for e in store.hook_errors(run_id))
        return bool(fired(tmp_path / "m", run_id)["complete"])

    wait_until(hook_done, 60, "the hook to succeed")
    calls = [m["t"] for m in marks(tmp_path / "m", "hook-complete-call", run_id)]
    assert len(calls) == 3
    assert calls[2] - calls[1] > calls[1] - calls[0]
    assert store.lookup(run_id) == before  # the run never changed while its hook failed
    [errors] = store.hook_errors(run_id)
    assert errors.count == 2 and "ticket system unavailable (call 2)" in errors.last_error.message
    metrics = urllib.request.urlopen("http://127.0.0.1:19187/metrics", timeout=10).read().decode()
    hook = 'hook="record_complete",workflow="flaky-steps"'
    assert re.search(rf"workflow_hook_executions_total\{{{hook}\}} 3\.0", metrics), metrics
    assert re.search(rf"workflow_hook_errors_total\{{{hook}\}} 2\.0", metrics), metrics
    assert re.search(rf"workflow_hook_duration_seconds_count\{{{hook}\}} 3\.0", metrics), metrics


def test_killing_the_hook_worker_mid_hook_loses_nothing(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    wf = flaky(broker_url, store)
    start_worker(APP, "flaky-steps.start,flaky-steps.middle", concurrency=1, name="steps")
    victim = start_worker(APP, "flaky-steps.hooks.*", concurrency=1, name="hooks-victim")
    run_id = wf.trigger("hk-1", initial_value=Task(marker_dir=str(tmp_path), hook_sleep=60))
    wait_until(lambda: bool(marks(tmp_path, "hook-complete-call", run_id)), 60, "the slow hook to start")
    victim.kill_hard()
    start_worker(APP, "flaky-steps.hooks.*", concurrency=1, name="hooks-2")
    wait_until(lambda: bool(fired(tmp_path, run_id)["complete"]), 60, "the hook to run again")
    assert len(marks(tmp_path, "hook-complete-call", run_id)) == 2
    assert len(fired(tmp_path, run_id)["complete"]) == 1
