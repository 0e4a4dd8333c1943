"""Publishing doorbells as Celery task messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from ..core.definition import Definition
from ..core.messages import describe_task, task_id, with_attempt
from ..core.ports import OutboxMessage
from .registry import registry


def _definition(app: Celery, workflow_name: str) -> Definition[Any, Any] | None:
    wf = registry(app).get(workflow_name)
    return wf.definition if wf is not None else None


class CeleryDispatcher:
    """Publishes doorbells as Celery task messages (JSON kwargs, ids only).

    The task id names the doorbell and the attempt (``{doorbell}-attempt-{n}``)
    and ``kwargsrepr`` says, for Flower, which work of which run it is.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        with self.app.producer_or_acquire() as producer:
            for m in messages:
                attempt = m.retries + 1
                self.app.send_task(
                    m.task,
                    kwargs=with_attempt(m.body, attempt),
                    queue=m.queue,
                    task_id=task_id(m.id, attempt),
                    retries=m.retries,
                    kwargsrepr=describe_task(_definition(self.app, m.workflow_name), m.body, attempt),
                    producer=producer,
                    serializer="json",
                    ignore_result=True,
                )
