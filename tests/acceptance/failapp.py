"""Workflows for the failure-handling and hook acceptance tests.

    celery -A tests.acceptance.failapp worker -Q 'flaky-steps.*'

Steps and hooks leave marker files in the directory named by the run's object
so the test process can see every attempt, when it happened and in which process.
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import Celery

import celeryconfig
from tests.acceptance.helpers import BuildOptions
from workflow_celery import Builder, Run, SQLStore, TypedRecord


class Stage(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    MIDDLE = 2
    DONE = 3
    CANCELLED = 4


@dataclass
class Task:
    marker_dir: str = ""
    fail_times: int = 0
    """-1: fail until a file named ``switch`` appears in marker_dir."""
    step_sleep: float = 0.0
    cancel: bool = False
    pause: bool = False
    hook_fail_times: int = 0
    hook_sleep: float = 0.0


def _mark(directory: str, kind: str, run_id: str, **data: object) -> int:
    """Append one line to ``{kind}.{run_id}.jsonl``; return how many lines there were before."""
    path = Path(directory) / f"{kind}.{run_id}.jsonl"
    before = len(path.read_text().splitlines()) if path.exists() else 0
    with path.open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), **data}) + "\n")
    return before


def start(run: Run[Task, Stage]) -> Stage:
    attempts = _mark(run.object.marker_dir, "attempt", run.run_id)
    if run.object.step_sleep:
        time.sleep(run.object.step_sleep)
    must_fail = (
        not (Path(run.object.marker_dir) / "switch").exists()
        if run.object.fail_times == -1
        else attempts < run.object.fail_times
    )
    if must_fail:
        raise ConnectionError(f"payment gateway unavailable (attempt {attempts + 1})")
    if run.object.cancel:
        return run.cancel("customer cancelled")
    if run.object.pause:
        return run.pause("needs review")
    return Stage.MIDDLE


def middle(run: Run[Task, Stage]) -> Stage:
    return Stage.DONE


def make_hook(event: str):  # type: ignore[no-untyped-def]
    def hook(record: TypedRecord[Task, Stage]) -> None:
        calls = _mark(record.object.marker_dir, f"hook-{event}-call", record.run_id)
        if record.object.hook_sleep and calls == 0:
            time.sleep(record.object.hook_sleep)  # the first attempt is slow: that is the one that gets killed
        if calls < record.object.hook_fail_times:
            raise RuntimeError(f"ticket system unavailable (call {calls + 1})")
        _mark(
            record.object.marker_dir,
            f"hook-{event}",
            record.run_id,
            version=record.meta.version,
            status=record.status.name,
            run_state=record.run_state.name,
            reason=record.meta.run_state_reason,
        )

    hook.__qualname__ = f"record_{event}"
    return hook


def builder() -> Builder[Task, Stage]:
    b = Builder("flaky-steps", Task, Stage)
    parallel = os.environ.get("WFC_PARALLEL")
    b.add_step(Stage.START, start, Stage.MIDDLE).with_options(
        err_backoff=timedelta(seconds=1),
        pause_after_err_count=int(os.environ.get("WFC_PAUSE_AFTER", "0")),
        parallel_count=int(parallel) if parallel else None,
    )
    b.add_step(Stage.MIDDLE, middle, Stage.DONE)
    b.on_complete(make_hook("complete"))
    b.on_cancel(make_hook("cancel"))
    b.on_pause(make_hook("pause"))
    return b


OPTIONS: BuildOptions = {
    "redeliver_after": timedelta(seconds=float(os.environ.get("WFC_REDELIVER_AFTER", "5"))),
    "hook_err_backoff": timedelta(seconds=1),
    # Due retries are published within 0.2 s, so measured delays show the backoff, not the relay's tick.
    "relay_interval": timedelta(seconds=0.2),
}

app = Celery("failapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), **OPTIONS)
