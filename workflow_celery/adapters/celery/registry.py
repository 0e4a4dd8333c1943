"""Which workflows are built on a Celery app: its registry, filled by ``build``."""

from __future__ import annotations

from typing import Any

from celery import Celery

from ...core.workflow import Workflow

_REGISTRY_ATTR = "_workflow_celery_workflows"


def registry(app: Celery) -> dict[str, Workflow[Any, Any]]:
    """The workflows built on ``app``, by name."""
    reg: dict[str, Workflow[Any, Any]] | None = getattr(app, _REGISTRY_ATTR, None)
    if reg is None:
        reg = {}
        setattr(app, _REGISTRY_ATTR, reg)
        # The first workflow built on an app teaches its workers to expand patterns and run the relay.
        from .worker import install_worker_support

        install_worker_support(app)
    return reg


def all_queues(app: Celery) -> list[str]:
    """Every queue of every workflow built on ``app``, in a stable order."""
    names: list[str] = []
    for wf in registry(app).values():
        names.extend(q for q in wf.queues() if q not in names)
    return names


def workflow_of_task(app: Celery, name: str | None) -> Workflow[Any, Any] | None:
    """The workflow that owns the task (or queue) ``name``, if one of ``app``'s does."""
    for wf in registry(app).values():
        if name in wf.queues():
            return wf
    return None
