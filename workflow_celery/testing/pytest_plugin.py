"""pytest fixtures for your own test suite, loaded automatically once workflow-celery is installed.

- ``workflow_clock``: a :class:`~workflow_celery.testing.FakeClock` at
  2025-01-01 00:00 UTC; pass it to ``build(..., clock=...)``.
- ``workflow_in_process``: ``wf, broker = workflow_in_process(builder, store=None,
  clock=None, **options)`` builds on an in-process broker (the code path of a
  worker, no server); brokers you ``start()`` are stopped after the test.
- ``workflow_worker``: ``worker = workflow_worker("shop.workflows", "order-processing.*",
  env={...})`` starts a real ``celery -A shop.workflows worker -Q 'order-processing.*'``
  in the current directory and returns once it is ready to take messages;
  every worker started is stopped after the test (SIGTERM, SIGKILL after 20 s).
  ``worker.output()`` is what it printed. It raises ``RuntimeError`` with the
  worker's output if the worker exits or is not ready within ``ready_timeout``
  seconds (60).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from ..adapters.inprocess import InProcessBroker
from ..builder import Builder
from ..core.workflow import Workflow
from . import FakeClock, in_process
from .worker import WorkflowWorker, celery_worker


@pytest.fixture
def workflow_clock() -> FakeClock:
    """A clock that only moves when told (``advance``, ``set``)."""
    return FakeClock()


@pytest.fixture
def workflow_in_process() -> Iterator[Callable[..., tuple[Workflow[Any, Any], InProcessBroker]]]:
    """Build a builder on an in-process broker; started brokers are stopped after the test."""
    brokers: list[InProcessBroker] = []

    def build(builder: Builder[Any, Any], **kwargs: Any) -> tuple[Workflow[Any, Any], InProcessBroker]:
        wf, broker = in_process(builder, **kwargs)
        brokers.append(broker)
        return wf, broker

    yield build
    for broker in brokers:
        broker.stop()


@pytest.fixture
def workflow_worker() -> Iterator[Callable[..., WorkflowWorker]]:
    """Start real ``celery worker`` processes for the test; all are stopped after it."""
    with ExitStack() as started:

        def start(app: str, queues: str, **options: Any) -> WorkflowWorker:
            """``celery_worker``'s arguments (``env``, ``concurrency``, ``pool``, ``ready_timeout``)."""
            return started.enter_context(celery_worker(app, queues, **options))

        yield start
