"""The ports the engine talks through: record store, dispatcher, clock.

Each has an in-memory implementation for unit tests and one contract test
suite (``tests/contract``) that every implementation must pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


@dataclass(frozen=True, slots=True)
class HookErrors:
    """The failures of one hook execution (one hook, one run-state change of one run)."""

    message_id: str
    run_id: str
    hook: str
    count: int
    last_error: ErrorInfo


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


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

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        *,
        reset_errors: bool = False,
    ) -> bool:
        """Compare-and-set: write ``record`` only if the stored version is ``expected_version``.

        In the same transaction: append a history row, delete the run's earlier
        step doorbells (they are superseded), delete error counters of other
        statuses, insert ``outbox``. With ``reset_errors`` the remaining counters
        go back to 0 (their last error is kept). Returns False (writing nothing)
        on a version mismatch or an unknown run.
        """
        ...

    def scrub_history(self, run_id: str, obj: bytes) -> None:
        """Replace the object in every history row of the run (data deletion)."""
        ...

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Insert doorbells whose id is not present yet (idempotent)."""
        ...

    def stranded_runs(
        self, workflow_name: str, statuses: Sequence[int], updated_before: datetime, limit: int
    ) -> list[Record]:
        """Initiated or running runs at one of ``statuses``, untouched since ``updated_before``,
        that have no step doorbell at all: nothing would ever move them again. Oldest first."""
        ...

    def lookup(self, run_id: str) -> Record:
        """Raises ``RecordNotFound``."""
        ...

    def latest(self, workflow_name: str, foreign_id: str) -> Record:
        """The newest run for the foreign id, by (created_at, run_id). Raises ``RecordNotFound``."""
        ...

    def list_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        """Runs ordered by creation time (then run id); ``run_id_prefix`` matches the start of the run id."""
        ...

    def count_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
    ) -> int:
        """How many runs match the filters of ``list_runs`` (every page, not one)."""
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

    def postpone_outbox(self, message_ids: Sequence[str], due_at: datetime) -> None:
        """Move these doorbells' ``due_at`` to ``due_at`` if that is later (a lease on running work)."""
        ...

    def reschedule_outbox(self, message_ids: Sequence[str], due_at: datetime) -> None:
        """Set these doorbells' ``due_at`` (earlier or later): the relay rings them then."""
        ...

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Take one of ``limit`` slots of a step for ``holder`` until ``expires_at``; False if all are taken.

        A slot whose holder's lease expired (its worker died) is free again.
        Safe with many callers at once: no more than ``limit`` holders at a time.
        """
        ...

    def extend_slot(self, holder: str, expires_at: datetime) -> None:
        """Move the expiry of ``holder``'s slot (a step still running)."""
        ...

    def release_slot(self, holder: str) -> None:
        """Free ``holder``'s slot (no-op if it expired and was taken by another)."""
        ...

    def record_error(self, run_id: str, status: int, error: ErrorInfo, retry: OutboxMessage | None) -> int:
        """Count a failed attempt of the step at ``status``; return the new count.

        When ``retry`` is given it is upserted (by id) into the outbox in the same
        transaction: the doorbell that rings the step again at ``retry.due_at``.
        """
        ...

    def errors(self, run_id: str) -> list[StepErrors]: ...

    def record_hook_error(self, message: OutboxMessage, hook: str, error: ErrorInfo, retry_at: datetime) -> int:
        """Count a failed hook execution and move its doorbell to ``retry_at``; return the new count.

        The doorbell row is kept (it is deleted only when the hook succeeds), so
        a failing hook is retried until it succeeds and is never dropped.
        """
        ...

    def hook_errors(self, run_id: str) -> list[HookErrors]:
        """Failure counters of the run's hook executions (kept after a later success)."""
        ...


class Dispatcher(Protocol):
    """Publishes doorbells to the broker (Celery) or an in-process queue."""

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish; raising is allowed (the relay will ring again)."""
        ...
