"""Lifecycle hooks: ``on_complete``, ``on_cancel``, ``on_pause`` (and data deletion).

A run-state change writes one doorbell per registered hook in the same
transaction as the change, on ``{workflow}.hooks.{event}``. Each hook runs in
isolation, at least once, with the record as it was at that change; a hook
that raises is retried with exponential backoff until it succeeds, and never
changes the run.
"""

from __future__ import annotations

import enum
import logging
import random
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from .definition import Definition
from .errors import RecordNotFound, WorkflowError
from .lease import LEASES
from .options import WorkflowOptions
from .ports import Clock, ErrorInfo, OutboxMessage, RecordStore
from .record import HistoryEntry, Record, TypedRecord
from .run_state import RunState

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

HOOK_EVENT_BY_STATE: dict[RunState, str] = {
    RunState.COMPLETED: "completed",
    RunState.CANCELLED: "cancelled",
    RunState.PAUSED: "paused",
    RunState.DATA_DELETED: "data_deleted",
}


class HookOutcome(enum.Enum):
    SUCCEEDED = "hook_succeeded"
    RETRY_SCHEDULED = "hook_retry_scheduled"
    DROPPED_INVALID = "dropped_invalid"
    DROPPED_DONE = "dropped_done"


class Metrics(Protocol):
    """Where hook executions are counted (Prometheus in workers, nothing in unit tests)."""

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None: ...


class NoMetrics:
    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        return None


def hook_name(index: int, fn: Callable[..., Any]) -> str:
    """Stable label of a hook: its registration index and qualified name."""
    return f"{index}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def hook_doorbells(
    definition: Definition[Any, Any], record: Record, now: datetime, redeliver_after: timedelta
) -> list[OutboxMessage]:
    event = HOOK_EVENT_BY_STATE.get(record.run_state)
    if event is None:
        return []
    queue = definition.hook_queue_for(event)
    bells = []
    for index, fn in enumerate(definition.hooks.get(event, [])):
        name = hook_name(index, fn)
        bells.append(
            OutboxMessage(
                id=f"{record.run_id}.{record.meta.version}.hook.{event}.{index}",
                workflow_name=definition.name,
                run_id=record.run_id,
                kind="hook",
                queue=queue,
                task=queue,
                body={
                    "workflow": definition.name,
                    "run_id": record.run_id,
                    "status": record.status,
                    "version": record.meta.version,
                    "event": event,
                    "hook": name,
                },
                created_at=now,
                # If this message is lost, the relay rings again; the hook runs at least once.
                due_at=now + redeliver_after,
            )
        )
    return bells


class HookRunner(Generic[T, S]):
    def __init__(
        self,
        definition: Definition[T, S],
        store: RecordStore,
        clock: Clock,
        options: WorkflowOptions,
        snapshot: Callable[[Record, HistoryEntry], TypedRecord[T, S]],
        metrics: Metrics,
    ) -> None:
        self.definition = definition
        self.store = store
        self.clock = clock
        self.options = options
        self.snapshot = snapshot
        self.metrics = metrics

    def backoff(self, attempt: int) -> timedelta:
        delay = min(self.options.hook_err_backoff * (1 << min(max(attempt - 1, 0), 32)), self.options.hook_max_backoff)
        return delay * random.uniform(0.75, 1.0)

    def handle(self, event: str, body: Any) -> HookOutcome:
        name = self.definition.name
        queue = self.definition.hook_queue_for(event)
        try:
            run_id, version, hook = self._parse(event, body)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return HookOutcome.DROPPED_INVALID
        message_id = f"{run_id}.{version}.hook.{event}.{hook.split(':', 1)[0]}"
        pending = {m.id: m for m in self.store.outbox(run_id) if m.kind == "hook"}
        message = pending.get(message_id)
        if message is None:
            # Already succeeded (a duplicate delivery), or the run is unknown.
            log.debug("hook %s for run %s v%d already ran", hook, run_id, version)
            return HookOutcome.DROPPED_DONE
        fn = self._registered(event, hook)
        if fn is None:
            # Renamed or removed since the change was committed: nothing can ever run it.
            log.error(
                "dropping %s for run %s v%d: no %s hook named %r is registered (known: %s)",
                queue,
                run_id,
                version,
                event,
                hook,
                ", ".join(hook_name(i, f) for i, f in enumerate(self.definition.hooks.get(event, []))) or "none",
                extra={"workflow": name, "run_id": run_id},
            )
            self.store.delete_outbox([message_id])
            return HookOutcome.DROPPED_INVALID
        started = time.perf_counter()
        try:
            with LEASES.hold(
                self.store, self.clock, message_id, self.options.redeliver_after, rung_at=message.created_at
            ):
                fn(self._record_at(run_id, version))
        except RecordNotFound:
            self.store.delete_outbox([message_id])
            return HookOutcome.DROPPED_INVALID
        except Exception as exc:
            self.metrics.hook_finished(name, hook, time.perf_counter() - started, False)
            return self._failed(message, hook, exc)
        self.metrics.hook_finished(name, hook, time.perf_counter() - started, True)
        self.store.delete_outbox([message_id])
        return HookOutcome.SUCCEEDED

    def _registered(self, event: str, hook: str) -> Callable[..., Any] | None:
        hooks = self.definition.hooks.get(event, [])
        index_text = hook.split(":", 1)[0]
        index = int(index_text) if index_text.isdigit() else -1
        if 0 <= index < len(hooks) and hook_name(index, hooks[index]) == hook:
            return hooks[index]
        return None

    def _parse(self, event: str, body: Any) -> tuple[str, int, str]:
        name = self.definition.name
        if not isinstance(body, dict) or body.get("workflow") != name:
            raise WorkflowError("malformed or foreign hook message", workflow=name)
        run_id, version, hook = body.get("run_id"), body.get("version"), body.get("hook")
        if not isinstance(run_id, str) or type(version) is not int or not isinstance(hook, str):
            raise WorkflowError("malformed hook message: run_id, version and hook are required", workflow=name)
        if body.get("event") != event:
            raise WorkflowError(f"hook message for {body.get('event')!r} on the {event} queue", workflow=name)
        return run_id, version, hook

    def _record_at(self, run_id: str, version: int) -> TypedRecord[T, S]:
        record = self.store.lookup(run_id)
        entry = next((h for h in self.store.history(run_id) if h.version == version), None)
        if entry is None:
            raise RecordNotFound(workflow=self.definition.name, run_id=run_id)
        return self.snapshot(record, entry)

    def _failed(self, message: OutboxMessage, hook: str, exc: Exception) -> HookOutcome:
        now = self.clock.now()
        info = ErrorInfo(
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc)[:2000],
            traceback="".join(traceback.format_exception(exc)[-30:]),
            occurred_at=now,
        )
        previous = next((e.count for e in self.store.hook_errors(message.run_id) if e.message_id == message.id), 0)
        delay = self.backoff(previous + 1)
        count = self.store.record_hook_error(message, hook, info, now + delay)
        log.warning(
            "hook %s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            hook,
            self.definition.name,
            message.run_id,
            count,
            delay.total_seconds(),
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": message.run_id, "hook": hook},
        )
        return HookOutcome.RETRY_SCHEDULED
