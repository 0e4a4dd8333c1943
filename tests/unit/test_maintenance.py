"""The background relay says what fails in one line, not a traceback every round, and backs off meanwhile."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.unit.workflows import chain
from workflow_celery import InProcessBroker, MemoryStore
from workflow_celery.core.errors import SchemaMissing
from workflow_celery.runtime.maintenance import Maintenance


class BrokenStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    def claim_due_outbox(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        return super().claim_due_outbox(*args, **kwargs)


def test_a_missing_schema_is_one_line_once_and_the_relay_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore(SchemaMissing("the database has no workflow-celery schema: run `workflow-celery db upgrade`"))
    wf = chain().build(InProcessBroker(), store)
    maintenance = Maintenance([wf])
    caplog.set_level(logging.INFO, logger="workflow_celery.runtime.maintenance")
    waits: list[float] = []
    for _ in range(5):
        maintenance.tick()
        waits.append(maintenance.next_wait())
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].levelno == logging.ERROR
    assert "db upgrade" in failures[0].getMessage()
    assert "\n" not in failures[0].getMessage() and failures[0].exc_info is None
    assert waits == sorted(waits) and waits[-1] > waits[0]
    assert waits[-1] <= 30.0

    store.error = None
    maintenance.tick()
    assert "works again" in caplog.records[-1].getMessage()
    assert maintenance.next_wait() == maintenance.interval


def test_a_changed_failure_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore(ConnectionRefusedError("connection refused"))
    maintenance = Maintenance([chain().build(InProcessBroker(), store)])
    maintenance.tick()
    maintenance.tick()
    store.error = TimeoutError("timed out")
    maintenance.tick()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2
    assert "ConnectionRefusedError: connection refused" in lines[0]
    assert "TimeoutError: timed out" in lines[1]
