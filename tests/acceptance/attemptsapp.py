"""A workflow whose first step fails in every way a step can fail, for the tests of attempts.

    celery -A tests.acceptance.attemptsapp worker -Q 'attempts.*'

The step leaves a line in ``{marker_dir}/attempt.{run_id}.jsonl`` when it starts
and another in ``done.{run_id}.jsonl`` when it ends, so the test process sees
every execution, in which process, and whether two overlapped. Options come
from the environment so each test starts workers as a user would.
"""

from __future__ import annotations

import enum
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from celery import Celery

import celeryconfig
from tests.acceptance.helpers import BuildOptions
from workflow_celery import Builder, Run, SQLStore


class Stage(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    WAITING = 2
    DONE = 3


@dataclass
class Job:
    marker_dir: str = ""
    fail_times: int = 0
    """-1: fail until a file named ``switch`` appears in marker_dir."""
    kill: bool = False
    """SIGKILL the process running the step, every time."""
    gil_hog: int = 0
    """Backtrack a regex over this many characters: C code that holds the GIL (28: about 10 s)."""
    wait: bool = False
    """Go to WAITING, whose timeout's timer is asked next."""
    naive_timer: bool = False
    """The WAITING timer returns a naive datetime."""
    sleep: float = 0.0
    """Seconds the step takes (between its two marks)."""


def _mark(directory: str, kind: str, run_id: str) -> int:
    path = Path(directory) / f"{kind}.{run_id}.jsonl"
    before = len(path.read_text().splitlines()) if path.exists() else 0
    with path.open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "pid": os.getpid()}) + "\n")
    return before


def start(run: Run[Job, Stage]) -> Stage:
    job = run.object
    attempts = _mark(job.marker_dir, "attempt", run.run_id)
    if job.kill:
        os.kill(os.getpid(), signal.SIGKILL)
    if job.gil_hog:
        re.match(r"(a+)+$", "a" * job.gil_hog + "b")
    time.sleep(job.sleep)
    _mark(job.marker_dir, "done", run.run_id)
    must_fail = not (Path(job.marker_dir) / "switch").exists() if job.fail_times == -1 else attempts < job.fail_times
    if must_fail:
        raise ConnectionError(f"payment gateway unavailable (attempt {attempts + 1})")
    return Stage.WAITING if job.wait else Stage.DONE


def timer(run: Run[Job, Stage], now: datetime) -> datetime:
    if run.object.naive_timer:
        return datetime.now() + timedelta(hours=1)
    return now + timedelta(hours=1)


def expire(run: Run[Job, Stage], now: datetime) -> Stage:
    return Stage.DONE


def builder() -> Builder[Job, Stage]:
    b = Builder("attempts", Job, Stage)
    b.add_step(Stage.START, start, Stage.WAITING, Stage.DONE)
    b.add_timeout(Stage.WAITING, timer, expire, Stage.DONE)
    return b


def options() -> BuildOptions:
    env = os.environ.get
    return {
        "pause_after_err_count": int(env("WFC_PAUSE_AFTER", "0")),
        "err_backoff": timedelta(seconds=float(env("WFC_ERR_BACKOFF", "1"))),
        "redeliver_after": timedelta(seconds=float(env("WFC_REDELIVER_AFTER", "5"))),
        "max_retry_countdown": timedelta(seconds=float(env("WFC_MAX_COUNTDOWN", "60"))),
        "relay_interval": timedelta(seconds=0.2),
    }


app = Celery("attemptsapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), **options())

__all__ = ["Job", "Stage", "app", "builder", "options", "wf"]
