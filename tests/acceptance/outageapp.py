"""A workflow for the broker and database outage tests: a step, a callback and the three hooks.

    celery -A tests.acceptance.outageapp worker -Q 'outage.*'

START's step moves a run to DONE, to WAITING (``wait``), where a callback
moves it on, or pauses it once (``hold``). Hooks leave one marker line per
execution in the run's object's directory.
"""

from __future__ import annotations

import enum
import json
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
    WAITING = 2
    DONE = 3


@dataclass
class Job:
    marker_dir: str = ""
    wait: bool = False
    hold: bool = False


def start(run: Run[Job, Stage]) -> Stage:
    if run.object.hold:
        run.object.hold = False  # saved with the pause: the step moves on once resumed
        return run.pause("held")
    return Stage.WAITING if run.object.wait else Stage.DONE


def answered(run: Run[Job, Stage], payload: bytes) -> Stage:
    return Stage.DONE


def marker(event: str):  # type: ignore[no-untyped-def]
    def hook(record: TypedRecord[Job, Stage]) -> None:
        path = Path(record.object.marker_dir) / f"hook-{event}.{record.run_id}.jsonl"
        with path.open("a") as fh:
            fh.write(json.dumps({"t": time.time(), "version": record.meta.version}) + "\n")

    hook.__qualname__ = f"record_{event}"
    return hook


def builder() -> Builder[Job, Stage]:
    b = Builder("outage", Job, Stage)
    b.add_step(Stage.START, start, Stage.WAITING, Stage.DONE)
    b.add_callback(Stage.WAITING, answered, Stage.DONE)
    b.on_complete(marker("complete"))
    b.on_pause(marker("pause"))
    b.on_cancel(marker("cancel"))
    return b


OPTIONS: BuildOptions = {
    "redeliver_after": timedelta(seconds=5),
    "relay_interval": timedelta(seconds=0.2),
}

app = Celery("outageapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), **OPTIONS)
