"""A workflow whose object has required fields, for deleting run data on a real worker.

celery -A tests.acceptance.erasureapp worker -Q 'erasure.*'
"""

from __future__ import annotations

import enum

from celery import Celery
from pydantic import BaseModel

import celeryconfig
from workflow_celery import Builder, Run, SQLStore


class Stage(enum.IntEnum):
    UNKNOWN = 0
    RECEIVED = 1
    FILED = 2


class Address(BaseModel):
    street: str
    city: str


class Claim(BaseModel):
    id: str
    claimant: str
    amount: float
    approved: bool
    address: Address
    documents: list[str]
    note: str | None
    currency: str = "EUR"


def file(run: Run[Claim, Stage]) -> Stage:
    run.object.documents.append(f"receipt-of-{run.object.claimant}")
    return Stage.FILED


def builder() -> Builder[Claim, Stage]:
    b = Builder("erasure", Claim, Stage)
    b.add_step(Stage.RECEIVED, file, Stage.FILED)
    return b


app = Celery("erasureapp")
app.config_from_object("celeryconfig")
wf = builder().build(app, SQLStore(celeryconfig.workflow_database_url))
