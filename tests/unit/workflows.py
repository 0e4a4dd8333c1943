"""Small workflows shared by the unit tests."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from workflow_celery import Builder, Run


class Status(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    MIDDLE = 2
    END = 3
    REJECTED = 4


@dataclass
class Thing:
    name: str = ""
    steps: list[str] = field(default_factory=list)
    count: int = 0


def start(run: Run[Thing, Status]) -> Status:
    run.object.steps.append("start")
    return Status.MIDDLE


def middle(run: Run[Thing, Status]) -> Status:
    run.object.steps.append("middle")
    return Status.END


def chain() -> Builder[Thing, Status]:
    b = Builder("chain", Thing, Status)
    b.add_step(Status.START, start, Status.MIDDLE, Status.REJECTED)
    b.add_step(Status.MIDDLE, middle, Status.END)
    return b
