"""A workflow whose first step raises what Celery cannot take as it is, for the tests of task errors.

    celery -A tests.acceptance.errorsapp worker -Q 'unsafe-errors.*'

``Job.raise_`` says what the step raises: ``memory`` (``MemoryError``), ``huge``
(an ``Exception`` with a 50 MB message), ``base`` (a ``BaseException`` that is
not an ``Exception``); anything else moves on. ``WFC_PAUSE_AFTER`` pauses the
run after that many failed attempts.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery

import celeryconfig
from tests.acceptance.helpers import BuildOptions
from workflow_celery import Builder, Run, SQLStore

HUGE = 50_000_000


class Stage(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    DONE = 2


@dataclass
class Job:
    raise_: str = ""


class QuotaExhausted(BaseException):
    """Not an ``Exception``."""


def start(run: Run[Job, Stage]) -> Stage:
    kind = run.object.raise_
    if kind == "memory":
        raise MemoryError("cannot allocate the report buffer")
    if kind == "huge":
        raise ValueError("x" * HUGE)
    if kind == "base":
        raise QuotaExhausted("monthly quota used up")
    return Stage.DONE


def builder() -> Builder[Job, Stage]:
    b = Builder("unsafe-errors", Job, Stage)
    b.add_step(Stage.START, start, Stage.DONE).with_options(
        err_backoff=timedelta(seconds=0.5),
        pause_after_err_count=int(os.environ.get("WFC_PAUSE_AFTER", "2")),
    )
    return b


OPTIONS: BuildOptions = {"relay_interval": timedelta(seconds=0.2), "redeliver_after": timedelta(seconds=30)}

app = Celery("errorsapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), **OPTIONS)
