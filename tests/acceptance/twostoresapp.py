"""Two workflows, each built with a store of its own on one database, as an app may write them.

celery -A tests.acceptance.twostoresapp worker -Q 'first.*,second.*'
"""

from __future__ import annotations

from celery import Celery

import celeryconfig
from tests.unit.workflows import Status, Thing, middle, start
from workflow_celery import Builder, SQLStore

app = Celery("two-stores")
app.config_from_object("celeryconfig")


def _builder(name: str) -> Builder[Thing, Status]:
    b = Builder(name, Thing, Status)
    b.add_step(Status.START, start, Status.MIDDLE, Status.REJECTED)
    b.add_step(Status.MIDDLE, middle, Status.END)
    return b


first = _builder("first").build(app, SQLStore(celeryconfig.workflow_database_url))
second = _builder("second").build(app, SQLStore(celeryconfig.workflow_database_url))
