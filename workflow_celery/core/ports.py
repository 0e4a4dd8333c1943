"""The ports the engine talks through: the record store and its roles, the dispatcher, the clock.

Each has an in-memory implementation for unit tests and one contract test
suite (``workflow_celery.testing.contract``) that every implementation must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar, runtime_checkable

from .dead_letters import DeadLetter
from .metrics import Metrics, NoMetrics, complete_metrics
from .record import HistoryEntry, Record
from .run_state import RunState
from .schedules import KEPT_SLOTS, ScheduleStore
from .stored import (
    MAX_ERROR_TEXT,
    Claim,
    ErrorInfo,
    HookErrors,
    Order,
    OutboxKind,
    OutboxMessage,
    StepErrors,
)

T = TypeVar("T")

__all__ = [
    "KEPT_SLOTS",
    "MAX_ERROR_TEXT",
    "Claim",
    "Claims",
    "Clock",
    "DeadLetterBox",
    "Dispatcher",
    "ErrorInfo",
    "ErrorLog",
    "HookErrors",
    "Metrics",
    "NoMetrics",
    "Order",
    "Outbox",
    "OutboxKind",
    "OutboxMessage",
    "RecordStore",
    "RunStore",
    "ScheduleStore",
    "Slots",
    "StepErrors",
    "SystemClock",
    "complete_metrics",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class RunStore(Protocol):
    """Runs and their history: the records every transition writes with compare-and-set."""

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
        keep_running: bool = False,
    ) -> bool:
        """Compare-and-set: write ``record`` only if the stored version is ``expected_version``.

        In the same transaction: append a history row, delete the run's earlier
        step doorbells (they are superseded), delete error counters of other
        statuses, insert ``outbox``. With ``reset_errors`` the remaining counters
        go back to 0 (their last error is kept). Returns False (writing nothing)
        on a version mismatch or an unknown run.

        With ``keep_running`` (a write not made by the attempt that holds the
        step: an operator's pause or resume, a callback), an earlier step
        doorbell whose claim is live at ``record.updated_at`` is kept as kind
        ``superseded`` instead: until that attempt lets go, ``claim`` refuses
        every other doorbell of the run but its hooks, so a step never runs
        twice at once across a pause and resume.
        """
        ...

    def after_commit(self, fn: Callable[[], None]) -> bool:
        """Take ``fn`` (publishing a write's doorbells) to call once the caller's transaction commits.

        True when the store is writing in a transaction of the caller's (see
        ``SQLStore.joined``): ``fn`` runs after its commit, never after a
        rollback. False otherwise: the write is committed already and the
        caller calls ``fn`` now. A store that never joins a caller's
        transaction always returns False.
        """
        ...

    def on_its_own(self) -> AbstractContextManager[None]:
        """Writes inside the block commit on their own, even inside a caller's transaction.

        For what must outlive that transaction's rollback: a failed
        callback's count (and the pause it may bring), since the callback's
        exception usually rolls the caller's transaction back. Outside a
        caller's transaction, a block like any other.
        """
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
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        """Runs ordered by creation time (then run id); ``run_id_prefix`` matches the start of the run id;
        ``created_after`` (inclusive) and ``created_before`` (exclusive) bound ``created_at``."""
        ...

    def count_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> int:
        """How many runs match the filters of ``list_runs`` (every page, not one)."""
        ...

    def history(self, run_id: str) -> list[HistoryEntry]:
        """Every stored version of a run, oldest first."""
        ...

    def scrub_history(self, run_id: str, obj: bytes) -> None:
        """Replace the object in every history row of the run (data deletion)."""
        ...

    def stranded_runs(
        self, workflow_name: str, statuses: Sequence[int], updated_before: datetime, limit: int
    ) -> list[Record]:
        """Initiated or running runs at one of ``statuses``, untouched since ``updated_before``,
        that have no step doorbell at all: nothing would ever move them again. Oldest first."""
        ...


class Outbox(Protocol):
    """Doorbells waiting to be answered, and the relay's view of them."""

    def outbox(self, run_id: str | None = None, *, queue: str | None = None) -> list[OutboxMessage]:
        """Pending doorbells, oldest first: of one run and/or one queue, or all of them."""
        ...

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Insert doorbells whose id is not present yet (idempotent)."""
        ...

    def delete_outbox(self, message_ids: Sequence[str]) -> None: ...

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
        never answered is rung again, less and less often. A row whose work is
        running (an unexpired ``claim``) is not taken.
        """
        ...


class Claims(Protocol):
    """Who is running a doorbell's work now: at most one attempt at a time."""

    def claim(
        self,
        message_id: str,
        run_id: str,
        version: int | None,
        token: str,
        now: datetime,
        until: datetime,
        *,
        attempt: int | None = None,
    ) -> Claim:
        """Read the run and take the doorbell ``message_id`` for ``token`` until ``until``, in one round trip.

        The claim is taken when the doorbell row exists, nobody holds an
        unexpired claim on it, (unless ``version`` is None) the run is at
        ``version``, and (unless ``attempt`` is None) ``attempt`` is the
        doorbell's next attempt, ``retries + 1``, and (unless the doorbell is a
        hook's) no ``superseded`` doorbell of the run is claimed until after
        ``now``. A row whose previous claim expired without being released
        is ``abandoned``: the attempt that held it died. Safe with many callers
        at once: at most one holds a doorbell at a time.
        """
        ...

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        """Extend the claims on these doorbells (and the step slots they hold) to ``until``: their work still runs."""
        ...

    def release_claim(self, message_id: str, token: str, *, due_at: datetime | None = None) -> bool:
        """Let go of a claim ``token`` holds; with ``due_at``, the doorbell rings again then. False if not held."""
        ...

    def abandon_claim(self, message_id: str, now: datetime) -> None:
        """The process holding this doorbell died: expire its claim and make the row due at ``now``.

        The claim's holder is kept, so the next claimer counts the lost attempt.
        """
        ...

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        """If ``token`` holds ``message_id``: delete it and insert ``messages``, atomically. False otherwise."""
        ...


class Slots(Protocol):
    """``parallel_count``: how many attempts at a step may run at once, across workers."""

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Take one of ``limit`` slots of a step for ``holder`` until ``expires_at``; False if all are taken.

        A slot whose holder's lease expired (its worker died) is free again.
        Safe with many callers at once: no more than ``limit`` holders at a time.
        ``renew_claims`` extends the slot of a holder named like the doorbell.
        """
        ...

    def release_slot(self, holder: str) -> None:
        """Free ``holder``'s slot (no-op if it expired and was taken by another)."""
        ...


class ErrorLog(Protocol):
    """Failed attempts: the counters that back off and pause runs, with their last error."""

    def record_failure(
        self,
        message_id: str,
        token: str,
        run_id: str,
        status: int,
        error: ErrorInfo,
        *,
        due_at: datetime | None,
        retries: int,
    ) -> int | None:
        """Count a failed attempt of the work ``token`` holds the doorbell of; return the new count.

        In the same transaction the claim is released, the doorbell's
        ``retries`` set and, with ``due_at``, the doorbell rung again then.
        Returns None, counting nothing, when ``token`` no longer holds the
        doorbell (the run moved on, or the claim expired and was taken), or
        when the doorbell was kept as ``superseded`` while the attempt ran:
        then it is deleted, as the attempt's result would have been discarded.
        """
        ...

    def record_error(self, run_id: str, status: int, error: ErrorInfo) -> int:
        """Count a failed attempt at ``status`` that had no doorbell (a callback); return the new count."""
        ...

    def errors(self, run_id: str) -> list[StepErrors]: ...

    def record_hook_failure(
        self, message_id: str, token: str, hook: str, error: ErrorInfo, *, due_at: datetime, retries: int
    ) -> int | None:
        """Count a failed hook execution, release its claim and ring its doorbell again at ``due_at``.

        Returns the new count, or None when ``token`` no longer holds the
        doorbell. The doorbell row is deleted only when the hook succeeds, so a
        failing hook is retried until it does and is never dropped.
        """
        ...

    def hook_errors(self, run_id: str) -> list[HookErrors]:
        """Failure counters of the run's hook executions (kept after a later success)."""
        ...


class DeadLetterBox(Protocol):
    """Messages no task could be given, kept for an operator."""

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a message no task could be given; a second letter with the same id is ignored."""
        ...

    def dead_letters(
        self, *, queue: str | None = None, id_prefix: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[DeadLetter]:
        """Dead letters, newest first (by ``received_at``, then id); ``id_prefix`` matches the start of the id."""
        ...

    def count_dead_letters(self, *, queue: str | None = None, id_prefix: str | None = None) -> int:
        """How many dead letters match the filters of ``dead_letters`` (every page, not one)."""
        ...

    def discard_dead_letters(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; return how many of them there were."""
        ...


@runtime_checkable
class RecordStore(RunStore, Outbox, Claims, Slots, ErrorLog, DeadLetterBox, Protocol):
    """Everything a workflow keeps in its database, in one store.

    One object, because one transaction must often span several roles: a
    transition writes the run, its history and its doorbells together, and a
    failed attempt counts its failure and releases its claim together. Each
    part of the library types against the narrowest role it needs.
    """


class Dispatcher(Protocol):
    """Publishes doorbells to the broker (Celery) or an in-process queue."""

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish; raising is allowed (the relay will ring again)."""
        ...


def one_per_database(items: Iterable[T], store: Callable[[T], object] = lambda item: item) -> list[T]:
    """``items`` without those whose ``store(item)`` reaches a database an earlier one reaches, in order.

    Two stores built on one URL (each workflow with its own ``SQLStore``) hold
    the same rows: a listing over both would show every row twice. A store
    says where its rows live with a ``location`` attribute; one without (the
    memory store) is a database of its own.
    """
    seen: set[object] = set()
    kept: list[T] = []
    for item in items:
        of = store(item)
        location = getattr(of, "location", None)
        key = ("location", location) if location is not None else ("object", id(of))
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept
