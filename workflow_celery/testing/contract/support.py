"""What the contract tests are made of: the base class with the ``store`` fixture, and builders.

The builders make the records, doorbells, errors and dead letters the tests
store (``rec``, ``moved``, ``msg``, ``err``, ``letter``) at fixed times from
``T0``; ``run_threads`` starts threads together, for the concurrency tests.
A store's own extra tests may use them too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar

import pytest

from ...core.dead_letters import DeadLetter
from ...core.ports import ErrorInfo, OutboxKind, OutboxMessage, RecordStore
from ...core.record import Meta, Record
from ...core.run_state import RunState

T0 = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
T = TypeVar("T")

NASTY = [
    "nul \x00 inside",
    "lone surrogate \udcff from a file name",
    "\ud83d half an emoji",
    "emoji \U0001f600 and accents \u00e9",
    "x" * 100_000,
    "",
]
"""Text from user code and input that every store must keep (as ``storable_text`` made it storable)."""
NASTY_IDS = ["nul", "surrogate", "half-pair", "unicode", "huge", "empty"]
EVERY_BYTE = bytes(range(256)) * 3 + b"\x00"


class StoreContract:
    """The base of every contract class: override the ``store`` fixture (and, optionally, ``open_store``)."""

    @pytest.fixture
    def store(self) -> RecordStore:
        """A fresh, empty store with its schema created; a new one for each test."""
        raise NotImplementedError(f"{type(self).__name__} must override the `store` fixture to test a store")

    @pytest.fixture
    def open_store(self, store: RecordStore) -> Callable[[], RecordStore]:
        """Opens another store on the same data as ``store`` (its own connections), for the concurrency tests.

        By default ``store`` itself, used from many threads at once. A store
        whose data outlives the object (a database) should return new objects
        on the same database, and close them when the test ends.
        """
        return lambda: store


class RunFilter(TypedDict, total=False):
    """The filters ``list_runs`` and ``count_runs`` share (besides the workflow name)."""

    status: int
    run_state: RunState
    foreign_id: str
    run_id_prefix: str


def rec(
    run_id: str = "run-1",
    *,
    foreign_id: str = "customer-1",
    workflow: str = "onboarding",
    run_state: RunState = RunState.RUNNING,
    status: int = 1,
    version: int = 1,
    obj: bytes = b'{"name":"Zo\xc3\xab","tags":["a","b"],"n":1}',
    created_at: datetime = T0,
    updated_at: datetime | None = None,
    reason: str = "",
) -> Record:
    """A run of the ``onboarding`` workflow."""
    return Record(
        workflow_name=workflow,
        foreign_id=foreign_id,
        run_id=run_id,
        run_state=run_state,
        status=status,
        object=obj,
        created_at=created_at,
        updated_at=updated_at or created_at,
        meta=Meta(version=version, run_state_reason=reason, status_description=f"S{status}", trace_origin="t.py:1"),
    )


def moved(record: Record, *, status: int | None = None, run_state: RunState | None = None, reason: str = "") -> Record:
    """The record's next version, one second later."""
    version = record.meta.version + 1
    return replace(
        record,
        status=record.status if status is None else status,
        run_state=record.run_state if run_state is None else run_state,
        updated_at=record.updated_at + SECOND,
        meta=Meta(version=version, run_state_reason=reason, status_description=f"S{status}"),
    )


def msg(
    record: Record | str,
    *,
    kind: OutboxKind = "step",
    id: str | None = None,
    due_at: datetime = T0,
    created_at: datetime = T0,
    attempts: int = 0,
    body: dict[str, Any] | None = None,
) -> OutboxMessage:
    """A doorbell of the run (a run id stands for version 1); its id is ``{run_id}.{version}`` unless given."""
    run_id = record if isinstance(record, str) else record.run_id
    version = 1 if isinstance(record, str) else record.meta.version
    return OutboxMessage(
        id=id or f"{run_id}.{version}",
        workflow_name="onboarding",
        run_id=run_id,
        kind=kind,
        queue="workflow.onboarding",
        task="workflow_celery.step",
        body=body if body is not None else {"run_id": run_id, "version": version, "nested": {"x": [1, 2.5, None]}},
        created_at=created_at,
        due_at=due_at,
        attempts=attempts,
    )


def err(message: str = "boom", at: datetime = T0) -> ErrorInfo:
    return ErrorInfo(
        error_type="ValueError", message=message, traceback="Traceback ...\nValueError: boom", occurred_at=at
    )


def letter(
    id: str = "dl-1",
    *,
    queue: str = "onboarding.created",
    body: bytes = EVERY_BYTE,
    at: datetime = T0,
    reason: str = "not a message: JSONDecodeError: Expecting value",
) -> DeadLetter:
    return DeadLetter(
        id=id,
        queue=queue,
        body=body,
        reason=reason,
        received_at=at,
        content_type="application/json",
        content_encoding="utf-8",
        headers='{"task": "onboarding.created"}',
        worker="w1@host",
    )


def ids(messages: Sequence[OutboxMessage]) -> list[str]:
    return [m.id for m in messages]


def run_threads(count: int, target: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``target(i)`` in ``count`` threads released together; their results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("did not run")] * count

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results
