"""A workflow whose ``on_complete`` hooks differ between deployments, for the rolling-deploy test.

    WFC_HOOKS=sms celery -A tests.acceptance.deployapp worker -Q 'deploy.hooks.*'

``record_complete`` is always registered; ``WFC_HOOKS`` (comma-separated)
adds ``send-sms`` and ``export``. Hooks leave marker files in the run's
object's directory, one line per execution, naming the process that ran it.
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
    DONE = 2


@dataclass
class Job:
    marker_dir: str = ""


def finish(run: Run[Job, Stage]) -> Stage:
    return Stage.DONE


def _mark(kind: str, record: TypedRecord[Job, Stage]) -> None:
    path = Path(record.object.marker_dir) / f"{kind}.{record.run_id}.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), "node": os.environ.get("WFC_NODE", "")}) + "\n")


def record_complete(record: TypedRecord[Job, Stage]) -> None:
    _mark("hook-complete", record)


def send_sms(record: TypedRecord[Job, Stage]) -> None:
    _mark("hook-sms", record)


def export(record: TypedRecord[Job, Stage]) -> None:
    _mark("hook-export", record)


def builder(hooks: str = "") -> Builder[Job, Stage]:
    b = Builder("deploy", Job, Stage)
    b.add_step(Stage.START, finish, Stage.DONE)
    b.on_complete(record_complete)
    wanted = {h.strip() for h in hooks.split(",") if h.strip()}
    if "sms" in wanted:
        b.on_complete(send_sms, name="send-sms")
    if "export" in wanted:
        b.on_complete(export)
    return b


OPTIONS: BuildOptions = {
    "redeliver_after": timedelta(seconds=5),
    "hook_err_backoff": timedelta(seconds=1),
    "hook_max_backoff": timedelta(seconds=4),
    "relay_interval": timedelta(seconds=0.2),
}

app = Celery("deployapp")
app.config_from_object("celeryconfig")
wf = builder(os.environ.get("WFC_HOOKS", "")).build(app, SQLStore(celeryconfig.workflow_database_url), **OPTIONS)
