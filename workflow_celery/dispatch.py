"""Binds a definition to whatever delivers its messages: Celery or the in-process broker."""

from __future__ import annotations

from typing import Any

from .core.definition import Definition
from .core.options import WorkflowOptions
from .core.ports import Clock, RecordStore
from .core.workflow import Workflow


def attach(
    app: Any, definition: Definition[Any, Any], store: RecordStore, clock: Clock, options: WorkflowOptions
) -> Workflow[Any, Any]:
    from .inprocess import InProcessBroker

    if isinstance(app, InProcessBroker):
        return app.attach(definition, store, clock, options)
    from .celery_adapter import attach_to_celery

    return attach_to_celery(app, definition, store, clock, options)
