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
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from .answer import Answer, HookOutcome
from .definition import Definition
from .errors import AttemptAbandoned, WorkflowError
from .failure import backoff, capture_error, plan_retry
from .messages import attempt_of, hook_doorbell_id, message_id_of
from .options import WorkflowOptions
from .ports import Clock, OutboxMessage, RecordStore
from .record import HistoryEntry, Record, TypedRecord
from .run_state import RunState
from .text import MAX_NAME_LENGTH, storable_text

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

HOOK_EVENT_BY_STATE: dict[RunState, str] = {
    RunState.COMPLETED: "completed",
    RunState.CANCELLED: "cancelled",
    RunState.PAUSED: "paused",
    RunState.DATA_DELETED: "data_deleted",
}


class Metrics(Protocol):
    """Where hook executions are counted (Prometheus in workers, nothing in unit tests)."""

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None: ...


class NoMetrics:
    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        return None


def hook_name(index: int, fn: Callable[..., Any]) -> str:
    """Stable label of a hook: its registration index and qualified name."""
    return storable_text(f"{index}:{getattr(fn, '__qualname__', type(fn).__name__)}", limit=MAX_NAME_LENGTH)


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
                id=hook_doorbell_id(record.run_id, record.meta.version, event, index),
                workflow_name=definition.name,
                run_id=record.run_id,
                kind="hook",
                queue=queue,
                task=queue,
                body={
                    "workflow": definition.name,
                    "run_id": record.run_id,
                    "foreign_id": record.foreign_id,
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

    def handle(self, event: str, body: Any) -> Answer:
        name = self.definition.name
        queue = self.definition.hook_queue_for(event)
        try:
            run_id, version, hook = self._parse(event, body)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return Answer(HookOutcome.DROPPED_INVALID)
        message_id = message_id_of(body)
        if message_id is None:
            log.error("dropping message on %s: hook %r has no index", queue, hook, extra={"workflow": name})
            return Answer(HookOutcome.DROPPED_INVALID)
        attempt_said = body.get("attempt")
        now = self.clock.now()
        token = uuid.uuid4().hex
        claim = self.store.claim(
            message_id, run_id, None, token, now, now + self.options.redeliver_after, attempt=attempt_said
        )
        if claim.doorbell is None:
            # Already succeeded (a duplicate delivery), or the run is unknown.
            log.debug("hook %s for run %s v%d already ran", hook, run_id, version)
            return Answer(HookOutcome.DROPPED_DONE, message_id)
        if not claim.claimed and attempt_said is not None and attempt_said != claim.doorbell.retries + 1:
            log.info("dropping a copy of attempt %d at %s, which already failed", attempt_said, message_id)
            return Answer(HookOutcome.DROPPED_DONE, message_id)
        if not claim.claimed:
            log.info("dropping a copy of %s: another worker is running it", message_id, extra={"workflow": name})
            return Answer(HookOutcome.DROPPED_RUNNING, message_id)
        fn = self._registered(event, hook)
        if fn is None or claim.record is None:
            # Renamed or removed since the change was committed, or the run is gone: nothing can ever run it.
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
            return Answer(HookOutcome.DROPPED_INVALID, message_id)
        attempt = claim.failures + 1
        started = time.perf_counter()
        try:
            if claim.abandoned:
                raise AttemptAbandoned(workflow=name, run_id=run_id, hook=hook)
            entry = next((h for h in self.store.history(run_id) if h.version == version), None)
            if entry is None:
                self.store.delete_outbox([message_id])
                return Answer(HookOutcome.DROPPED_INVALID, message_id)
            fn(self.snapshot(claim.record, entry))
        except Exception as exc:
            self.metrics.hook_finished(name, hook, time.perf_counter() - started, False)
            return self._failed(message_id, run_id, hook, token, attempt, exc)
        self.metrics.hook_finished(name, hook, time.perf_counter() - started, True)
        self.store.delete_outbox([message_id])
        return Answer(HookOutcome.SUCCEEDED, message_id, attempt)

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
        attempt_of(body, workflow=name)
        return run_id, version, hook

    def _failed(self, message_id: str, run_id: str, hook: str, token: str, attempt: int, exc: Exception) -> Answer:
        now = self.clock.now()
        info = capture_error(exc, now)
        plan = plan_retry(
            now,
            backoff(self.options.hook_err_backoff, self.options.hook_max_backoff, attempt),
            max_countdown=self.options.max_retry_countdown,
            grace=self.options.redeliver_after,
        )
        count = self.store.record_hook_failure(message_id, token, hook, info, due_at=plan.backstop_at, retries=attempt)
        if count is None:
            return Answer(HookOutcome.DROPPED_DONE, message_id, attempt, exc)
        log.warning(
            "hook %s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            hook,
            self.definition.name,
            run_id,
            attempt,
            (plan.retry_at - now).total_seconds(),
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": run_id, "hook": hook},
        )
        return Answer(HookOutcome.RETRY_SCHEDULED, message_id, attempt, exc, plan)
