"""One transition: answer a doorbell, run the step, commit with compare-and-set.

This is the code path every worker runs, whatever delivers the message
(a Celery worker, or the in-process runner used by tests and the demo).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from .codec import ObjectCodec
from .definition import Definition, StepSpec
from .errors import ConfigurationError, InvalidTransition, RecordNotFound, SerializationError, WorkflowError
from .hooks import HookOutcome, HookRunner, NoMetrics, hook_doorbells
from .lease import LEASES
from .messages import Action, Doorbells, Message, doorbell, parse_message
from .options import StepOptions, WorkflowOptions
from .ports import Clock, Dispatcher, ErrorInfo, OutboxMessage, RecordStore
from .record import HistoryEntry, Meta, Record, TypedRecord
from .run import Directive, DirectiveKind, Run
from .run_state import RunState, check_transition

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 2000
TRACEBACK_HEAD_LINES = 30
PAUSE_REASON_MAX_ERRORS = "max error retry threshold hit"
SLOT_RETRY_MIN_SECONDS = 0.5
SLOT_RETRY_MAX_SECONDS = 1.5


class Outcome(enum.Enum):
    """What answering one doorbell did; returned for logs, metrics and tests."""

    MOVED = "moved"
    COMPLETED = "completed"
    REPEATED = "repeated"
    SKIPPED = "skipped"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    RESUMED = "resumed"
    DATA_DELETED = "data_deleted"
    RETRY_SCHEDULED = "retry_scheduled"
    PAUSED_AFTER_ERRORS = "paused_after_errors"
    WAITING_FOR_SLOT = "waiting_for_slot"
    TIMED_OUT = "timed_out"
    DROPPED_STALE = "dropped_stale"
    DROPPED_STOPPED = "dropped_stopped"
    DROPPED_UNKNOWN_RUN = "dropped_unknown_run"
    DROPPED_INVALID = "dropped_invalid"
    SUPERSEDED = "superseded"


class Engine(Generic[T, S]):
    """Runs steps and commits transitions for one workflow."""

    def __init__(
        self,
        definition: Definition[T, S],
        store: RecordStore,
        dispatcher: Dispatcher,
        clock: Clock,
        options: WorkflowOptions,
    ) -> None:
        self.definition = definition
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.options = options
        self.custom_delete: Callable[[T], T | None] | None = options.custom_delete
        self.codec: ObjectCodec[T] = ObjectCodec(definition.name, definition.object_type)
        self._queues = {s: definition.queue_for(s) for s in definition.steps}
        self._status_queues = definition.step_queues()
        self.hooks: HookRunner[T, S] = HookRunner(
            definition,
            store,
            clock,
            options,
            lambda record, entry: TypedRecord(**self.fields(record, entry)),
            options.metrics if options.metrics is not None else NoMetrics(),
        )

    # -- doorbells ---------------------------------------------------------

    def step_doorbell(self, record: Record, now: datetime, *, due_at: datetime | None = None) -> OutboxMessage | None:
        """The message that makes a worker run the step at the record's status, if any."""
        queue = self._queues.get(record.status)
        if queue is None or record.run_state not in (RunState.INITIATED, RunState.RUNNING):
            return None
        when = due_at if due_at is not None else now + self.options.redeliver_after
        return doorbell(record, queue, now, action=Action.STEP, due_at=when)

    def doorbells_for(self, record: Record, now: datetime) -> Doorbells:
        """Everything a write of ``record`` must ring, decided from the record alone."""
        ring_now: list[OutboxMessage] = []
        later: list[OutboxMessage] = []
        step = self.step_doorbell(record, now)
        if step is not None:
            ring_now.append(step)
        queue = self._queues.get(record.status)
        if record.run_state == RunState.PAUSED and queue is not None and self.options.auto_resume_after is not None:
            later.append(
                doorbell(record, queue, now, action=Action.RESUME, due_at=now + self.options.auto_resume_after)
            )
        if record.run_state == RunState.REQUESTED_DATA_DELETED:
            ring_now.append(
                doorbell(
                    record,
                    self.definition.delete_queue(),
                    now,
                    action=Action.DELETE,
                    due_at=now + self.options.redeliver_after,
                )
            )
        ring_now.extend(hook_doorbells(self.definition, record, now, self.options.redeliver_after))
        later.extend(self.timeout_doorbells(record, now))
        return Doorbells(now=ring_now, later=later)

    def timeout_doorbells(self, record: Record, now: datetime) -> list[OutboxMessage]:
        """One doorbell per timeout of the record's status, due when its timer says.

        They are ordinary version-bound doorbells: the run leaving the status
        deletes them, which is how a timeout is cancelled.
        """
        specs = self.definition.timeouts.get(record.status)
        if not specs or record.run_state not in (RunState.INITIATED, RunState.RUNNING):
            return []
        run = self.to_run(record)
        bells = []
        for index, spec in enumerate(specs):
            expires = spec.timer(run, now)
            if expires is None:
                continue
            if not isinstance(expires, datetime) or expires.tzinfo is None:
                raise ConfigurationError(
                    f"the timer of timeout {index} at {self.definition.status_name(record.status)} returned "
                    f"{expires!r}: expected an aware datetime or None",
                    workflow=self.definition.name,
                    run_id=record.run_id,
                )
            queue = self._status_queues[record.status]
            bells.append(doorbell(record, queue, now, action=Action.TIMEOUT, due_at=expires, timeout=index))
        return bells

    def publish(self, messages: list[OutboxMessage]) -> None:
        """Publish right after commit; a failure only delays the run until the relay rings again."""
        if not messages:
            return
        try:
            self.dispatcher.publish(messages)
        except Exception:
            log.warning(
                "publishing %d message(s) failed; the outbox relay will publish them again",
                len(messages),
                exc_info=True,
                extra={"workflow": self.definition.name, "run_ids": [m.run_id for m in messages]},
            )

    def commit(self, new: Record, expected_version: int, now: datetime, *, reset_errors: bool = False) -> bool:
        """Compare-and-set ``new`` over ``expected_version``, then ring the next doorbells."""
        bells = self.doorbells_for(new, now)
        if not self.store.update_run(new, expected_version, bells.all, reset_errors=reset_errors):
            return False
        self.publish(bells.now)
        return True

    # -- records -----------------------------------------------------------

    def next_record(
        self,
        current: Record,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        obj: bytes | None = None,
        reason: str | None = None,
        now: datetime,
    ) -> Record:
        new_status = current.status if status is None else status
        return Record(
            workflow_name=current.workflow_name,
            foreign_id=current.foreign_id,
            run_id=current.run_id,
            run_state=current.run_state if run_state is None else run_state,
            status=new_status,
            object=current.object if obj is None else obj,
            created_at=current.created_at,
            updated_at=now,
            meta=Meta(
                version=current.meta.version + 1,
                run_state_reason=current.meta.run_state_reason if reason is None else reason,
                status_description=self.definition.status_name(new_status),
                trace_origin=current.meta.trace_origin,
            ),
        )

    def fields(self, record: Record, entry: HistoryEntry | None = None) -> dict[str, Any]:
        """A run's fields, now or (with ``entry``) as they were at one stored version."""
        if entry is None:
            return {
                "workflow_name": record.workflow_name,
                "foreign_id": record.foreign_id,
                "run_id": record.run_id,
                "run_state": record.run_state,
                "status": self.definition.status(record.status),
                "object": self.codec.decode(record.object, run_id=record.run_id),
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "meta": record.meta,
            }
        return {
            "workflow_name": record.workflow_name,
            "foreign_id": record.foreign_id,
            "run_id": record.run_id,
            "run_state": entry.run_state,
            "status": self.definition.status(entry.status),
            "object": self.codec.decode(entry.object, run_id=record.run_id),
            "created_at": record.created_at,
            "updated_at": entry.created_at,
            "meta": Meta(
                version=entry.version,
                run_state_reason=entry.reason,
                status_description=self.definition.status_name(entry.status),
                trace_origin=record.meta.trace_origin,
            ),
        }

    def to_run(self, record: Record) -> Run[T, S]:
        return Run(**self.fields(record))

    def change_run_state(self, record: Record, target: RunState, reason: str, now: datetime) -> bool:
        """Checked run-state change (pause, resume, cancel, delete request) as one compare-and-set."""
        check_transition(
            record.run_state, target, workflow=self.definition.name, run_id=record.run_id, foreign_id=record.foreign_id
        )
        new = self.next_record(record, run_state=target, reason=reason, now=now)
        # A resumed run gets its full budget of attempts again.
        return self.commit(new, record.meta.version, now, reset_errors=target == RunState.RUNNING)

    # -- answering doorbells -------------------------------------------------

    def _receive(self, queue: str, body: Any, expected_status: int | None) -> Message | Outcome:
        name = self.definition.name
        try:
            return parse_message(name, body, expected_status=expected_status)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return Outcome.DROPPED_INVALID

    def _load(self, msg: Message) -> Record | Outcome:
        name = self.definition.name
        try:
            record = self.store.lookup(msg.run_id)
        except RecordNotFound:
            log.error(
                "dropping message for unknown run %s of workflow %s at status %s",
                msg.run_id,
                name,
                self.definition.status_name(msg.status),
                extra={"workflow": name, "run_id": msg.run_id},
            )
            return Outcome.DROPPED_UNKNOWN_RUN
        if record.workflow_name != name:
            log.error(
                "dropping message: run %s belongs to workflow %s, not %s",
                msg.run_id,
                record.workflow_name,
                name,
                extra={"workflow": name, "run_id": msg.run_id},
            )
            return Outcome.DROPPED_INVALID
        if record.meta.version != msg.version or record.status != msg.status:
            log.debug(
                "dropping stale message for run %s: message v%d at %s, record v%d at %s",
                msg.run_id,
                msg.version,
                self.definition.status_name(msg.status),
                record.meta.version,
                self.definition.status_name(record.status),
                extra={"workflow": name, "run_id": msg.run_id},
            )
            return Outcome.DROPPED_STALE
        return record

    def handle_step(self, status: int, body: Any) -> Outcome:
        """Answer one doorbell on the queue of the step at ``status``. Never raises for bad input."""
        msg = self._receive(self.definition.queue_for(status), body, status)
        if isinstance(msg, Outcome):
            return msg
        if msg.action is Action.DELETE:
            log.error("dropping delete request on a step queue", extra={"workflow": self.definition.name})
            return Outcome.DROPPED_INVALID
        record = self._load(msg)
        if isinstance(record, Outcome):
            return record
        if msg.action is Action.RESUME:
            return self._auto_resume(record)
        if record.run_state not in (RunState.INITIATED, RunState.RUNNING):
            log.debug("dropping message for stopped run %s (%s)", msg.run_id, record.run_state.name)
            return Outcome.DROPPED_STOPPED
        if msg.action is Action.TIMEOUT:
            return self._run_timeout(record, msg.timeout)
        spec = self.definition.steps.get(status)
        if spec is None:
            log.error("dropping step message for %s, which has no step", self.definition.queue_for(status))
            return Outcome.DROPPED_INVALID
        try:
            return self._run_step(spec, record)
        except SerializationError as exc:
            return self._fail(spec, record, exc)

    def handle_hook(self, event: str, body: Any) -> HookOutcome:
        """Answer one doorbell on ``{workflow}.hooks.{event}``: run that one hook."""
        return self.hooks.handle(event, body)

    def handle_delete(self, body: Any) -> Outcome:
        """Answer a data-deletion request: scrub the object and its copies in history."""
        msg = self._receive(self.definition.delete_queue(), body, None)
        if isinstance(msg, Outcome):
            return msg
        record = self._load(msg)
        if isinstance(record, Outcome):
            return record
        if record.run_state != RunState.REQUESTED_DATA_DELETED:
            return Outcome.DROPPED_STOPPED
        replacement = self._deleted_object(record)
        # Scrubbing history first is safe to repeat: if the commit below loses, the request is rung again.
        self.store.scrub_history(record.run_id, replacement)
        now = self.clock.now()
        new = self.next_record(record, run_state=RunState.DATA_DELETED, obj=replacement, now=now)
        if not self.commit(new, record.meta.version, now):
            return self._superseded(record)
        log.info("deleted the data of run %s of workflow %s", record.run_id, self.definition.name)
        return Outcome.DATA_DELETED

    def check_deletable(self) -> None:
        """Refuse, at build time, an object type whose deleted runs could not be read back."""
        if self.custom_delete is None:
            self.codec.zero()

    def _deleted_object(self, record: Record) -> bytes:
        if self.custom_delete is not None:
            obj = self.codec.decode(record.object, run_id=record.run_id)
            result = self.custom_delete(obj)
            return self.codec.encode(obj if result is None else result, run_id=record.run_id)
        return self.codec.encode(self.codec.zero(), run_id=record.run_id)

    def _auto_resume(self, record: Record) -> Outcome:
        if record.run_state != RunState.PAUSED:
            return Outcome.DROPPED_STALE
        if not self.change_run_state(record, RunState.RUNNING, "", self.clock.now()):
            return self._superseded(record)
        log.info(
            "run %s of workflow %s resumed automatically after %s paused",
            record.run_id,
            self.definition.name,
            self.options.auto_resume_after,
            extra={"workflow": self.definition.name, "run_id": record.run_id},
        )
        return Outcome.RESUMED

    def _run_step(self, spec: StepSpec, record: Record) -> Outcome:
        limit = spec.options.parallel_count
        if not limit:
            return self._run_step_leased(spec, record, None)
        now = self.clock.now()
        holder = f"{record.run_id}.{record.meta.version}/{uuid.uuid4().hex[:12]}"
        if not self.store.acquire_slot(
            self.definition.name, spec.status, limit, holder, now, now + self.options.redeliver_after
        ):
            # All slots are busy: ring again shortly, through the relay, instead of holding a worker.
            wait = timedelta(seconds=random.uniform(SLOT_RETRY_MIN_SECONDS, SLOT_RETRY_MAX_SECONDS))
            self.store.reschedule_outbox([f"{record.run_id}.{record.meta.version}"], now + wait)
            return Outcome.WAITING_FOR_SLOT
        try:
            return self._run_step_leased(spec, record, holder)
        finally:
            self.store.release_slot(holder)

    def _run_step_leased(self, spec: StepSpec, record: Record, slot_holder: str | None) -> Outcome:
        run = self.to_run(record)
        if run.run_state == RunState.INITIATED:
            # As in the original: a step sees its run as running, so run.cancel() works on the first step.
            run.run_state = RunState.RUNNING
        lease = LEASES.hold(
            self.store,
            self.clock,
            f"{record.run_id}.{record.meta.version}",
            self.options.redeliver_after,
            rung_at=record.updated_at,
            slot_holder=slot_holder,
        )
        try:
            with lease:
                result = spec.fn(run)
                if spec.is_async or asyncio.iscoroutine(result):
                    result = asyncio.run(result)
        except Exception as exc:
            return self._fail(spec, record, exc)
        outcome = self.apply_result(spec.status, spec.destinations, record, run, result, "step")
        if isinstance(outcome, InvalidTransition):
            return self._fail(spec, record, outcome)
        return outcome

    def _run_timeout(self, record: Record, index: int) -> Outcome:
        specs = self.definition.timeouts.get(record.status, [])
        if index >= len(specs):
            log.error("dropping timeout %d of %s: no such timeout", index, self.definition.status_name(record.status))
            return Outcome.DROPPED_INVALID
        timeout = specs[index]
        # Failures of a timeout use the workflow's default backoff and pause threshold.
        spec = StepSpec(timeout.status, timeout.fn, timeout.destinations, StepOptions(), timeout.is_async)
        retry = (Action.TIMEOUT, index)
        try:
            run = self.to_run(record)
            if run.run_state == RunState.INITIATED:
                run.run_state = RunState.RUNNING
            result = timeout.fn(run, self.clock.now())
            if timeout.is_async or asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except Exception as exc:
            return self._fail(spec, record, exc, retry=retry)
        outcome = self.apply_result(timeout.status, timeout.destinations, record, run, result, "timeout")
        if isinstance(outcome, InvalidTransition):
            return self._fail(spec, record, outcome, retry=retry)
        return Outcome.TIMED_OUT if outcome in (Outcome.MOVED, Outcome.COMPLETED) else outcome

    def apply_result(
        self,
        source: int,
        destinations: tuple[int, ...],
        record: Record,
        run: Run[T, S],
        result: object,
        what: str,
    ) -> Outcome | InvalidTransition:
        """Commit what a step, callback or timeout returned; an invalid destination is returned, not raised."""
        now = self.clock.now()
        if isinstance(result, Directive):
            return self._apply_directive(record, run, result, now)
        dest = _as_status(result)
        if dest is None or dest not in destinations:
            return InvalidTransition(
                f"{what} returned {self._describe(result)}, which is not an allowed destination of "
                f"{self.definition.status_name(source)} (allowed: "
                f"{', '.join(self.definition.status_name(d) for d in destinations)})",
                workflow=self.definition.name,
                foreign_id=record.foreign_id,
                run_id=record.run_id,
            )
        obj = self.codec.encode(run.object, run_id=record.run_id, foreign_id=record.foreign_id)
        terminal = self.definition.graph.is_terminal(dest)
        new = self.next_record(
            record,
            status=dest,
            run_state=RunState.COMPLETED if terminal else RunState.RUNNING,
            obj=obj,
            now=now,
        )
        if not self.commit(new, record.meta.version, now):
            return self._superseded(record)
        return Outcome.COMPLETED if terminal else Outcome.MOVED

    def _apply_directive(self, record: Record, run: Run[T, S], directive: Directive, now: datetime) -> Outcome:
        if directive.kind is DirectiveKind.SKIP:
            return Outcome.SKIPPED
        obj = self.codec.encode(run.object, run_id=record.run_id, foreign_id=record.foreign_id)
        if directive.kind is DirectiveKind.SAVE_AND_REPEAT:
            new = self.next_record(record, run_state=RunState.RUNNING, obj=obj, now=now)
            outcome = Outcome.REPEATED
        else:
            target = RunState.PAUSED if directive.kind is DirectiveKind.PAUSE else RunState.CANCELLED
            current = RunState.RUNNING if record.run_state == RunState.INITIATED else record.run_state
            check_transition(
                current, target, workflow=self.definition.name, run_id=record.run_id, foreign_id=record.foreign_id
            )
            new = self.next_record(record, run_state=target, obj=obj, reason=directive.reason, now=now)
            outcome = Outcome.PAUSED if target == RunState.PAUSED else Outcome.CANCELLED
        if not self.commit(new, record.meta.version, now):
            return self._superseded(record)
        return outcome

    def _superseded(self, record: Record) -> Outcome:
        log.info(
            "run %s of workflow %s changed while its step ran (paused, cancelled or a duplicate won); "
            "the step's result is discarded",
            record.run_id,
            self.definition.name,
            extra={"workflow": self.definition.name, "run_id": record.run_id},
        )
        return Outcome.SUPERSEDED

    # -- failures ----------------------------------------------------------

    def backoff(self, spec: StepSpec, attempt: int) -> timedelta:
        """``err_backoff * 2**(attempt-1)``, capped, with jitter that keeps delays growing."""
        base = spec.options.err_backoff or self.options.err_backoff
        cap = spec.options.max_backoff or self.options.max_backoff
        delay = min(base * (1 << min(max(attempt - 1, 0), 32)), cap)
        return delay * random.uniform(0.75, 1.0)

    def pause_after(self, spec: StepSpec) -> int:
        opt = spec.options.pause_after_err_count
        return self.options.pause_after_err_count if opt is None else opt

    def _fail(
        self, spec: StepSpec, record: Record, exc: BaseException, *, retry: tuple[Action, int] | None = None
    ) -> Outcome:
        now = self.clock.now()
        info = ErrorInfo(
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc)[:MAX_ERROR_MESSAGE],
            traceback="".join(traceback.format_exception(exc)[-TRACEBACK_HEAD_LINES:]),
            occurred_at=now,
        )
        previous = next((e.count for e in self.store.errors(record.run_id) if e.status == record.status), 0)
        attempt = previous + 1
        limit = self.pause_after(spec)
        extra = {"workflow": self.definition.name, "run_id": record.run_id, "attempt": attempt}
        if limit and attempt >= limit:
            self.store.record_error(record.run_id, record.status, info, None)
            reason = f"{PAUSE_REASON_MAX_ERRORS}: {type(exc).__name__}: {info.message}"
            current = RunState.RUNNING if record.run_state == RunState.INITIATED else record.run_state
            check_transition(current, RunState.PAUSED, workflow=self.definition.name, run_id=record.run_id)
            new = self.next_record(record, run_state=RunState.PAUSED, reason=reason, now=now)
            if not self.commit(new, record.meta.version, now):
                return self._superseded(record)
            log.warning(
                "run %s of workflow %s paused at %s after %d failed attempts: %s: %s",
                record.run_id,
                self.definition.name,
                self.definition.status_name(record.status),
                attempt,
                info.error_type,
                info.message,
                extra=extra,
            )
            return Outcome.PAUSED_AFTER_ERRORS
        delay = self.backoff(spec, attempt)
        if retry is None:
            again = self.step_doorbell(record, now, due_at=now + delay)
        else:
            queue = self._status_queues[record.status]
            again = doorbell(record, queue, now, action=retry[0], due_at=now + delay, timeout=retry[1])
        self.store.record_error(record.run_id, record.status, info, again)
        log.warning(
            "step %s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            self.definition.status_name(record.status),
            self.definition.name,
            record.run_id,
            attempt,
            delay.total_seconds(),
            info.error_type,
            info.message,
            extra=extra,
        )
        return Outcome.RETRY_SCHEDULED

    def _describe(self, value: object) -> str:
        dest = _as_status(value)
        return self.definition.status_name(dest) if dest is not None else repr(value)


def _as_status(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)
