"""The ports the engine talks through: record store, dispatcher, clock.

Each has an in-memory implementation for unit tests and one contract test
suite (``tests/contract``) that every implementation must pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol, runtime_checkable

from .record import HistoryEntry, Record
from .run_state import RunState

OutboxKind = Literal["step", "hook", "delete"]
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A doorbell: a Celery message to publish, kept in the database until answered.

    Step doorbells are deleted by the transaction that moves their run on, so a
    row still present after ``due_at`` means the message was lost, is stuck
    behind a dead worker, or was never published; the relay rings it again.
    """

    id: str
    workflow_name: str
    run_id: str
    kind: OutboxKind
    queue: str
    task: str
    body: Mapping[str, Any]
    created_at: datetime
    due_at: datetime
    attempts: int = 0

    def body_json(self) -> str:
        return json.dumps(dict(self.body), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What is kept of a failed attempt."""

    error_type: str
    message: str
    traceback: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class StepErrors:
    """The error counter of one run at one status."""

    run_id: str
    status: int
    count: int
    last_error: ErrorInfo


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@runtime_checkable
class RecordStore(Protocol):
    """Where runs, their history, doorbells and error counters live."""

    def create_schema(self) -> None:
        """Create or upgrade the tables (idempotent)."""
        ...

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        """Insert a new run (and its first history row and doorbells) atomically.

        Raises ``WorkflowInProgress`` when another run of the same workflow and
        foreign id is initiated, running or paused; the database enforces it.
        """
        ...

    def update_run(self, record: Record, expected_version: int, outbox: Sequence[OutboxMessage]) -> bool:
        """Compare-and-set: write ``record`` only if the stored version is ``expected_version``.

        In the same transaction: append a history row, delete the run's earlier
        step doorbells (they are superseded), delete error counters of other
        statuses, insert ``outbox``. Returns False (writing nothing) on a version
        mismatch or an unknown run.
        """
        ...

    def lookup(self, run_id: str) -> Record:
        """Raises ``RecordNotFound``."""
        ...

    def latest(self, workflow_name: str, foreign_id: str) -> Record:
        """The newest run for the foreign id. Raises ``RecordNotFound``."""
        ...

    def list_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        """Runs ordered by creation time (then run id)."""
        ...

    def history(self, run_id: str) -> list[HistoryEntry]:
        """Every stored version of a run, oldest first."""
        ...

    def outbox(self, run_id: str | None = None) -> list[OutboxMessage]:
        """Pending doorbells, oldest first (all runs when run_id is None)."""
        ...

    def claim_due_outbox(
        self,
        now: datetime,
        *,
        limit: int,
        redeliver_after: timedelta,
        max_interval: timedelta,
    ) -> list[OutboxMessage]:
        """Take doorbells due at ``now`` for publishing; safe with many callers at once.

        Each claimed row's ``due_at`` moves to ``now + redeliver_after * 2**attempts``
        (capped at ``max_interval``) and ``attempts`` grows by one, so a row that is
        never answered is rung again, less and less often.
        """
        ...

    def delete_outbox(self, message_ids: Sequence[str]) -> None: ...

    def record_error(self, run_id: str, status: int, error: ErrorInfo, retry: OutboxMessage | None) -> int:
        """Count a failed attempt of the step at ``status``; return the new count.

        When ``retry`` is given it is upserted (by id) into the outbox in the same
        transaction: the doorbell that rings the step again at ``retry.due_at``.
        """
        ...

    def errors(self, run_id: str) -> list[StepErrors]: ...


class Dispatcher(Protocol):
    """Publishes doorbells to the broker (Celery) or an in-process queue."""

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish; raising is allowed (the relay will ring again)."""
        ...
