"""A workflow whose first step can be made slow, to kill a worker in the middle of it.

celery -A tests.acceptance.killapp worker -Q 'slow-steps.*'
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import Celery

import celeryconfig
from workflow_celery import Builder, Run, SQLStore


class Step(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    WORKED = 2
    DONE = 3


@dataclass
class Job:
    marker_dir: str = ""
    sleep: float = 0.0
    attempts_seen: int = 0


def work(run: Run[Job, Step]) -> Step:
    marker = Path(run.object.marker_dir)
    earlier = list(marker.glob(f"{run.run_id}.*"))
    (marker / f"{run.run_id}.{os.getpid()}").touch()
    if not earlier and run.object.sleep:
        time.sleep(run.object.sleep)  # only the first attempt is slow: that is the one that gets killed
    run.object.attempts_seen = len(earlier) + 1
    return Step.WORKED


def finish(run: Run[Job, Step]) -> Step:
    return Step.DONE


def builder() -> Builder[Job, Step]:
    b = Builder("slow-steps", Job, Step)
    b.add_step(Step.START, work, Step.WORKED)
    b.add_step(Step.WORKED, finish, Step.DONE)
    return b


REDELIVER_AFTER = timedelta(seconds=float(os.environ.get("WFC_REDELIVER_AFTER", "5")))

app = Celery("killapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), redeliver_after=REDELIVER_AFTER)
