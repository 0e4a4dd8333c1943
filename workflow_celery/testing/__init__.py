"""Helpers for testing workflows: a fake clock, ``require``, ``wait_for``, an in-process runner, ``make_run``.

Runs go through the same code path as a Celery worker (``Workflow.handle_step``),
delivered by :class:`~workflow_celery.InProcessBroker` instead of a broker: no
server, no Celery eager mode.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..adapters.inprocess import InProcessBroker
from ..adapters.memory import MemoryStore
from ..builder import Builder
from ..core.errors import ConfigurationError, RecordNotFound
from ..core.run import Run
from ..core.workflow import Workflow
from .records import make_record, make_run
from .worker import celery_worker

__all__ = [
    "DEFAULT_TIMEOUT",
    "FakeClock",
    "await_timeout_insert",
    "celery_worker",
    "in_process",
    "make_record",
    "make_run",
    "require",
    "trigger_callback_on",
    "wait_for",
]

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

DEFAULT_TIMEOUT = 10.0


class FakeClock:
    """A clock that only moves when told to; pass it to ``build(..., clock=clock)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        with self._lock:
            self._now = when


def in_process(
    builder: Builder[T, S], *, store: Any = None, clock: Any = None, **options: Any
) -> tuple[Workflow[T, S], InProcessBroker]:
    """Build ``builder`` on a fresh in-process broker (and a memory store unless one is given)."""
    broker = InProcessBroker()
    wf = builder.build(broker, store if store is not None else MemoryStore(), clock=clock, **options)
    return wf, broker


def _pump(wf: Workflow[Any, Any]) -> None:
    """When the workflow runs on an idle in-process broker, answer its messages now."""
    dispatcher = wf.dispatcher
    if isinstance(dispatcher, InProcessBroker) and not dispatcher._threads:
        dispatcher.drain()
        dispatcher.relay()
        dispatcher.drain()


def _normalise(wf: Workflow[Any, Any], value: Any) -> Any:
    return json.loads(wf.codec.encode(value))


def wait_for(
    wf: Workflow[T, S],
    foreign_id: str,
    predicate: Callable[[Run[T, S]], bool],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Run[T, S]:
    """Wait until some stored version of the latest run for ``foreign_id`` satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        _pump(wf)
        try:
            record = wf.store.latest(wf.name, foreign_id)
        except RecordNotFound:
            record = None
        if record is not None:
            for entry in wf.store.history(record.run_id):
                run = wf.typed.run(record, entry)
                if predicate(run):
                    return run
        if time.monotonic() >= deadline:
            raise AssertionError(f"wait_for: no version of the latest run of {foreign_id!r} matched in {timeout}s")
        time.sleep(0.01)


def require(
    wf: Workflow[T, S], foreign_id: str, status: S, expected_object: T, *, timeout: float = DEFAULT_TIMEOUT
) -> Run[T, S]:
    """Assert the latest run of ``foreign_id`` reaches ``status`` with ``expected_object``.

    The object is compared as JSON, so custom serialisation is respected; the
    last stored version at ``status`` is the one compared.
    """
    if int(status) not in wf.definition.graph:
        raise ConfigurationError(f"status {status!r} is not configured for the workflow", workflow=wf.name)
    run = wait_for(wf, foreign_id, lambda r: r.status == status, timeout=timeout)
    record = wf.store.latest(wf.name, foreign_id)
    matching = [e for e in wf.store.history(record.run_id) if e.status == int(status)]
    last = wf.typed.run(record, matching[-1]) if matching else run
    got, want = _normalise(wf, last.object), _normalise(wf, expected_object)
    if got != want:
        raise AssertionError(f"{wf.name} {foreign_id!r} at {status.name}: object is {got!r}, expected {want!r}")
    return last


def trigger_callback_on(
    wf: Workflow[T, S],
    foreign_id: str,
    run_id: str,
    status: S,
    payload: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Wait until the run is at ``status``, then deliver ``payload`` to its callbacks (as JSON unless bytes/str)."""
    deadline = time.monotonic() + timeout
    while True:
        _pump(wf)
        record = wf.store.lookup(run_id)
        if record.status == int(status) and not record.run_state.stopped:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"trigger_callback_on: run {run_id} of {wf.name} did not reach {status.name} in {timeout}s"
            )
        time.sleep(0.01)
    wf.callback(foreign_id, status, payload)
    _pump(wf)


def await_timeout_insert(
    wf: Workflow[T, S], foreign_id: str, run_id: str, status: S, *, timeout: float = DEFAULT_TIMEOUT
) -> datetime:
    """Wait until the run has a timeout pending at ``status``; return when it is due."""
    deadline = time.monotonic() + timeout
    while True:
        _pump(wf)
        record = wf.store.lookup(run_id)
        if record.foreign_id != foreign_id:
            raise AssertionError(f"run {run_id} belongs to {record.foreign_id!r}, not {foreign_id!r}")
        due = [
            m.due_at
            for m in wf.store.outbox(run_id)
            if m.body.get("action") == "timeout" and m.body.get("status") == int(status)
        ]
        if due:
            return min(due)
        if time.monotonic() >= deadline:
            raise AssertionError(f"await_timeout_insert: no timeout at {status.name} for run {run_id} in {timeout}s")
        time.sleep(0.01)
