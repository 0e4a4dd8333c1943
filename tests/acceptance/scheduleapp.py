"""A workflow of one quick step, started by schedules.

celery -A tests.acceptance.scheduleapp worker -Q 'ticks.*'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery

import celeryconfig
from workflow_celery import Builder, Run, SQLStore


class Tick(enum.IntEnum):
    UNKNOWN = 0
    DUE = 1
    DONE = 2


@dataclass
class Beat:
    label: str = ""
    handled: bool = False


def handle(run: Run[Beat, Tick]) -> Tick:
    run.object.handled = True
    return Tick.DONE


def builder() -> Builder[Beat, Tick]:
    b = Builder("ticks", Beat, Tick)
    b.add_step(Tick.DUE, handle, Tick.DONE)
    return b


# Workers look for due slots five times a second: a one-second schedule is the test's subject.
RELAY_INTERVAL = timedelta(seconds=0.2)

app = Celery("scheduleapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url), relay_interval=RELAY_INTERVAL)
