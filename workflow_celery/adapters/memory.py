"""In-memory record store for unit tests and the in-process runner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta

from ..core.errors import RecordNotFound, WorkflowInProgress
from ..core.failures import backoff
from ..core.ports import Claim, ErrorInfo, HookErrors, Order, OutboxMessage, StepErrors
from ..core.record import HistoryEntry, Record
from ..core.run_state import RunState
from ..core.text import MAX_NAME_LENGTH, storable_text
from .memory_dead_letters import MemoryDeadLetters
from .memory_schedules import MemorySchedules
from .memory_statistics import MemoryRunStatistics


class MemoryStore(MemoryDeadLetters, MemorySchedules, MemoryRunStatistics):
    """A thread-safe store with the same semantics as ``SQLStore``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, Record] = {}
        self._order: list[str] = []
        self._history: dict[str, list[HistoryEntry]] = {}
        self._outbox: dict[str, OutboxMessage] = {}
        self._errors: dict[tuple[str, int], StepErrors] = {}
        self._hook_errors: dict[str, HookErrors] = {}
        self._slots: dict[tuple[str, int, int], tuple[str, datetime]] = {}
        self._holders: dict[str, str] = {}
        """Doorbell id -> token of the claim on it (kept after expiry until released: an abandoned attempt)."""
        MemoryDeadLetters.__init__(self)
        MemorySchedules.__init__(self)

    def create_schema(self) -> None:
        return None

    def _append_history(self, record: Record) -> None:
        self._history.setdefault(record.run_id, []).append(record.history_entry())

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        with self._lock:
            for other in self._records.values():
                if (
                    other.workflow_name == record.workflow_name
                    and other.foreign_id == record.foreign_id
                    and other.run_state.in_progress
                    and record.run_state.in_progress
                ):
                    raise WorkflowInProgress(
                        workflow=record.workflow_name, foreign_id=record.foreign_id, run_id=other.run_id
                    )
            if record.run_id in self._records:
                raise ValueError(f"run {record.run_id} already exists")
            self._records[record.run_id] = record
            self._order.append(record.run_id)
            self._append_history(record)
            for msg in outbox:
                self._outbox[msg.id] = msg

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        *,
        reset_errors: bool = False,
        keep_running: bool = False,
    ) -> bool:
        with self._lock:
            current = self._records.get(record.run_id)
            if current is None or current.meta.version != expected_version:
                return False
            if record.run_state.in_progress and not current.run_state.in_progress:
                for other in self._records.values():
                    if (
                        other.run_id != record.run_id
                        and other.workflow_name == record.workflow_name
                        and other.foreign_id == record.foreign_id
                        and other.run_state.in_progress
                    ):
                        raise WorkflowInProgress(
                            workflow=record.workflow_name, foreign_id=record.foreign_id, run_id=other.run_id
                        )
            self._records[record.run_id] = record
            self._append_history(record)
            for mid in [k for k, m in self._outbox.items() if m.run_id == record.run_id and m.kind == "step"]:
                if keep_running and _held(self._outbox[mid], record.updated_at):
                    self._outbox[mid] = replace(self._outbox[mid], kind="superseded")
                else:
                    self._drop(mid)
            for key in [k for k in self._errors if k[0] == record.run_id and k[1] != record.status]:
                del self._errors[key]
            if reset_errors:
                for key in [k for k in self._errors if k[0] == record.run_id]:
                    self._errors[key] = replace(self._errors[key], count=0)
            for msg in outbox:
                self._holders.pop(msg.id, None)
                self._outbox[msg.id] = msg
            return True

    def _drop(self, message_id: str) -> None:
        self._outbox.pop(message_id, None)
        self._holders.pop(message_id, None)

    def scrub_history(self, run_id: str, obj: bytes) -> None:
        with self._lock:
            self._history[run_id] = [replace(h, object=obj) for h in self._history.get(run_id, [])]

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        with self._lock:
            for msg in messages:
                self._outbox.setdefault(msg.id, msg)

    def after_commit(self, fn: Callable[[], None]) -> bool:
        """Always False: every write commits on its own."""
        return False

    def on_its_own(self) -> AbstractContextManager[None]:
        """Every write commits on its own already."""
        return nullcontext()

    def lookup(self, run_id: str) -> Record:
        with self._lock:
            try:
                return self._records[run_id]
            except KeyError:
                raise RecordNotFound(run_id=run_id) from None

    def latest(self, workflow_name: str, foreign_id: str) -> Record:
        with self._lock:
            mine = [
                r for r in self._records.values() if r.workflow_name == workflow_name and r.foreign_id == foreign_id
            ]
        if mine:
            return max(mine, key=lambda r: (r.created_at, r.run_id))
        raise RecordNotFound(workflow=workflow_name, foreign_id=foreign_id)

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
        rows = self._matching(workflow_name, status, run_state, foreign_id, run_id_prefix)
        rows = _created_between(rows, created_after, created_before)
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=(order == "desc"))
        return rows[offset : offset + limit]

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
        rows = self._matching(workflow_name, status, run_state, foreign_id, run_id_prefix)
        return len(_created_between(rows, created_after, created_before))

    def _matching(
        self,
        workflow_name: str | None,
        status: int | None,
        run_state: RunState | None,
        foreign_id: str | None,
        run_id_prefix: str | None,
    ) -> list[Record]:
        with self._lock:
            rows = [self._records[r] for r in self._order]
        return [
            r
            for r in rows
            if (workflow_name is None or r.workflow_name == workflow_name)
            and (status is None or r.status == status)
            and (run_state is None or r.run_state == run_state)
            and (foreign_id is None or r.foreign_id == foreign_id)
            and (run_id_prefix is None or r.run_id.startswith(run_id_prefix))
        ]

    def history(self, run_id: str) -> list[HistoryEntry]:
        with self._lock:
            return list(self._history.get(run_id, []))

    def outbox(self, run_id: str | None = None, *, queue: str | None = None) -> list[OutboxMessage]:
        with self._lock:
            rows = [
                m
                for m in self._outbox.values()
                if (run_id is None or m.run_id == run_id) and (queue is None or m.queue == queue)
            ]
        return sorted(rows, key=lambda m: (m.created_at, m.id))

    def claim_due_outbox(
        self, now: datetime, *, limit: int, redeliver_after: timedelta, max_interval: timedelta
    ) -> list[OutboxMessage]:
        with self._lock:
            due = sorted(
                (m for m in self._outbox.values() if m.due_at <= now and not _held(m, now)),
                key=lambda m: (m.due_at, m.id),
            )
            claimed = due[:limit]
            for msg in claimed:
                wait = backoff(redeliver_after, max_interval, msg.attempts + 1, jitter=False)
                self._outbox[msg.id] = replace(msg, due_at=now + wait, attempts=msg.attempts + 1)
            return claimed

    def delete_outbox(self, message_ids: Sequence[str]) -> None:
        with self._lock:
            for mid in message_ids:
                self._drop(mid)

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
        with self._lock:
            record = self._records.get(run_id)
            row = self._outbox.get(message_id)
            if row is not None and row.kind == "hook":
                hook = self._hook_errors.get(message_id)
                failures = hook.count if hook else 0
            else:
                errors = self._errors.get((run_id, record.status)) if record is not None else None
                failures = errors.count if errors else 0
            current = version is None or (record is not None and record.meta.version == version)
            held = row is not None and (_held(row, now) or self._superseded(row, now))
            if row is None or not current or held or (attempt is not None and attempt != row.retries + 1):
                return Claim(record=record, doorbell=row, claimed=False, abandoned=False, failures=failures)
            abandoned = message_id in self._holders
            row = replace(row, claimed_until=until)
            self._outbox[message_id] = row
            self._holders[message_id] = token
            return Claim(record=record, doorbell=row, claimed=True, abandoned=abandoned, failures=failures)

    def _superseded(self, row: OutboxMessage, now: datetime) -> bool:
        """Whether an attempt superseded by an operator still runs the step of ``row``'s run."""
        others = (m for m in self._outbox.values() if m.run_id == row.run_id and m.id != row.id)
        return row.kind != "hook" and any(m.kind == "superseded" and _held(m, now) for m in others)

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        with self._lock:
            for mid in message_ids:
                row = self._outbox.get(mid)
                if row is not None and mid in self._holders and row.claimed_until is not None:
                    self._outbox[mid] = replace(row, claimed_until=max(row.claimed_until, until))
            holders = set(message_ids)
            for key, (who, expires) in list(self._slots.items()):
                if who in holders and expires < until:
                    self._slots[key] = (who, until)

    def _holds(self, message_id: str, token: str) -> OutboxMessage | None:
        row = self._outbox.get(message_id)
        return row if row is not None and self._holders.get(message_id) == token else None

    def release_claim(self, message_id: str, token: str, *, due_at: datetime | None = None) -> bool:
        with self._lock:
            row = self._holds(message_id, token)
            if row is None:
                return False
            del self._holders[message_id]
            self._outbox[message_id] = replace(row, claimed_until=None, due_at=row.due_at if due_at is None else due_at)
            return True

    def abandon_claim(self, message_id: str, now: datetime) -> None:
        with self._lock:
            row = self._outbox.get(message_id)
            if row is not None and message_id in self._holders:
                self._outbox[message_id] = replace(row, claimed_until=now, due_at=min(row.due_at, now))

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        with self._lock:
            if self._holds(message_id, token) is None:
                return False
            self._drop(message_id)
            for msg in messages:
                self._holders.pop(msg.id, None)
                self._outbox[msg.id] = msg
            return True

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        with self._lock:
            for slot in range(limit):
                taken = self._slots.get((workflow_name, status, slot))
                if taken is None or taken[1] < now:
                    self._slots[(workflow_name, status, slot)] = (holder, expires_at)
                    return True
            return False

    def release_slot(self, holder: str) -> None:
        with self._lock:
            for key in [k for k, (who, _) in self._slots.items() if who == holder]:
                del self._slots[key]

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
        with self._lock:
            row = self._holds(message_id, token)
            if row is None:
                return None
            del self._holders[message_id]
            if row.kind == "superseded":  # discarded with its result, as by the SQL stores
                del self._outbox[message_id]
                return None
            self._outbox[message_id] = replace(
                row, claimed_until=None, retries=retries, due_at=row.due_at if due_at is None else due_at
            )
            return self._count(run_id, status, error)

    def record_error(self, run_id: str, status: int, error: ErrorInfo) -> int:
        with self._lock:
            return self._count(run_id, status, error)

    def _count(self, run_id: str, status: int, error: ErrorInfo) -> int:
        previous = self._errors.get((run_id, status))
        count = (previous.count if previous else 0) + 1
        self._errors[(run_id, status)] = StepErrors(run_id=run_id, status=status, count=count, last_error=error)
        return count

    def errors(self, run_id: str) -> list[StepErrors]:
        with self._lock:
            return sorted((e for k, e in self._errors.items() if k[0] == run_id), key=lambda e: e.status)

    def record_hook_failure(
        self, message_id: str, token: str, hook: str, error: ErrorInfo, *, due_at: datetime, retries: int
    ) -> int | None:
        with self._lock:
            row = self._holds(message_id, token)
            if row is None:
                return None
            del self._holders[message_id]
            self._outbox[message_id] = replace(row, claimed_until=None, retries=retries, due_at=due_at)
            previous = self._hook_errors.get(message_id)
            count = (previous.count if previous else 0) + 1
            self._hook_errors[message_id] = HookErrors(
                message_id=message_id,
                run_id=row.run_id,
                hook=storable_text(hook, limit=MAX_NAME_LENGTH),
                count=count,
                last_error=error,
            )
            return count

    def hook_errors(self, run_id: str) -> list[HookErrors]:
        with self._lock:
            return sorted((e for e in self._hook_errors.values() if e.run_id == run_id), key=lambda e: e.message_id)


def _held(row: OutboxMessage, now: datetime) -> bool:
    """A claim on the row that has not expired: its work is running."""
    return row.claimed_until is not None and row.claimed_until > now


def _created_between(rows: list[Record], after: datetime | None, before: datetime | None) -> list[Record]:
    return [r for r in rows if (after is None or r.created_at >= after) and (before is None or r.created_at < before)]
