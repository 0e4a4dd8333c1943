"""A broker that is down at trigger time costs one warning line, not a page of chained tracebacks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from tests.unit.workflows import chain
from workflow_celery import MemoryStore
from workflow_celery.adapters.celery.dispatcher import CeleryDispatcher


class _Producers:
    """Stands for the dispatcher's producer pool: no broker is contacted by the unit tests."""

    @contextlib.contextmanager
    def acquire(self, **_: Any) -> Iterator[object]:
        yield object()


def refused(*_: Any, **__: Any) -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise OSError("Error 111 connecting to 127.0.0.1:6379. Connection refused.") from exc
    except OSError as exc:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.") from exc


def test_a_failed_publish_is_one_line_with_the_traceback_at_debug(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Celery("down")
    app.conf.broker_url = "redis://127.0.0.1:6379/15"
    store = MemoryStore()
    wf = chain().build(app, store)
    dispatcher = wf.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    monkeypatch.setattr(dispatcher, "_producers", _Producers)
    monkeypatch.setattr(app, "send_task", refused)
    caplog.set_level(logging.DEBUG)

    run_id = wf.trigger("down-1")  # the trigger itself succeeds: the row waits for the relay

    assert [m.run_id for m in store.outbox(run_id)] == [run_id]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    [warning] = warnings
    assert warning.getMessage() == (
        "publishing 1 message(s) failed; the outbox relay will publish them again: "
        "OperationalError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    )
    assert warning.exc_info is None and "\n" not in warning.getMessage()
    assert getattr(warning, "run_ids", None) == [run_id]
    [debug] = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert debug.exc_info is not None and debug.exc_info[0] is OperationalError
    assert "Traceback" not in logging.Formatter().format(warning)
