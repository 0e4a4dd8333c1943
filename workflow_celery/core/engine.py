"""One transition: answer a doorbell, run the step, commit with compare-and-set.

This is the code path every worker runs, whatever delivers the message
(a Celery worker, or the in-process runner used by tests and the demo).

Answering a doorbell starts with a claim: one round trip reads the run and
takes the doorbell for this attempt, so at most one process works on a given
doorbell at a time however many copies of its message arrive. Everything that
can fail before the commit (the user's function, a timer, encoding the object,
the store) is a failed attempt: counted in the database, retried with backoff,
pausing the run after ``pause_after_err_count``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from .answer import Answer, HookOutcome, Outcome
from .codec import ObjectCodec
from .definition import Definition, StepSpec
from .errors import AttemptAbandoned, InvalidTransition, WorkflowError
from .failure import backoff, capture_error, pause_reason, plan_retry
from .hooks import HookRunner, NoMetrics, hook_doorbells
from .messages import Action, Doorbells, Message, doorbell, parse_message
from .options import WorkflowOptions
from .ports import Clock, Dispatcher, OutboxMessage, RecordStore
from .record import HistoryEntry, Meta, Record, TypedRecord
from .run import Directive, DirectiveKind, Run
from .run_state import RunState, check_transition

__all__ = ["Answer", "Engine", "HookOutcome", "Outcome"]

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

SLOT_RETRY_MIN_SECONDS = 0.5
SLOT_RETRY_MAX_SECONDS = 1.5
ACTIVE = (RunState.INITIATED, RunState.RUNNING)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed attempt at a doorbell's work."""

    message: Message
    record: Record
    token: str
    number: int
    """1 for the first attempt; failures counted so far plus one."""


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

    def step_doorbell(self, record: Record, now: datetime) -> OutboxMessage | None:
        """The message that makes a worker run the step at the record's status, if any."""
        queue = self._queues.get(record.status)
        if queue is None or record.run_state not in ACTIVE:
            return None
        return doorbell(record, queue, now, action=Action.STEP, due_at=now + self.options.redeliver_after)

    def doorbells_for(self, record: Record, now: datetime) -> Doorbells:
        """Everything a write of ``record`` must ring, decided from the record alone (never raises)."""
        ring_now: list[OutboxMessage] = []
        later: list[OutboxMessage] = []
        redeliver = now + self.options.redeliver_after
        step = self.step_doorbell(record, now)
        if step is not None:
            ring_now.append(step)
        if record.run_state in ACTIVE and self.definition.timeouts.get(record.status):
            # The timers are asked by a worker, not here: a timer that fails is then a failed
            # attempt at this status, not a failure of the write that brought the run here.
            timers_queue = self._status_queues[record.status]
            ring_now.append(doorbell(record, timers_queue, now, action=Action.TIMERS, due_at=redeliver))
        step_queue = self._queues.get(record.status)
        if record.run_state == RunState.PAUSED and step_queue is not None and self.options.auto_resume_after:
            later.append(
                doorbell(record, step_queue, now, action=Action.RESUME, due_at=now + self.options.auto_resume_after)
            )
        if record.run_state == RunState.REQUESTED_DATA_DELETED:
            ring_now.append(
                doorbell(record, self.definition.delete_queue(), now, action=Action.DELETE, due_at=redeliver)
            )
        ring_now.extend(hook_doorbells(self.definition, record, now, self.options.redeliver_after))
        return Doorbells(now=ring_now, later=later)

    def timeout_doorbells(self, record: Record, now: datetime) -> list[OutboxMessage]:
        """One doorbell per timeout of the record's status, due when its timer says.

        Each timer is asked ``timer(run, arrived)`` with the time the run
        arrived at the status. They are ordinary version-bound doorbells: the
        run leaving the status deletes them, which is how a timeout is
        cancelled. Raises ``TypeError`` for a timer that returns anything but
        an aware datetime or None.
        """
        run = self.to_run(record)
        bells = []
        queue = self._status_queues[record.status]
        for index, spec in enumerate(self.definition.timeouts.get(record.status, [])):
            expires = spec.timer(run, record.updated_at)
            if expires is None:
                continue
            if not isinstance(expires, datetime) or expires.tzinfo is None:
                raise TypeError(
                    f"the timer of timeout {index} at {self.definition.status_name(record.status)} returned "
                    f"{expires!r}: expected a timezone-aware datetime or None"
                )
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
        """The run a step, callback, timer or timeout works on.

        As in the original, a just-started run is seen as running, so
        ``run.cancel()`` works on the first step.
        """
        run: Run[T, S] = Run(**self.fields(record))
        if run.run_state == RunState.INITIATED:
            run.run_state = RunState.RUNNING
        return run

    def change_run_state(self, record: Record, target: RunState, reason: str, now: datetime) -> bool:
        """Checked run-state change (pause, resume, cancel, delete request) as one compare-and-set."""
        check_transition(
            record.run_state, target, workflow=self.definition.name, run_id=record.run_id, foreign_id=record.foreign_id
        )
        new = self.next_record(record, run_state=target, reason=reason, now=now)
        # A resumed run gets its full budget of attempts again.
        return self.commit(new, record.meta.version, now, reset_errors=target == RunState.RUNNING)

    # -- answering doorbells -------------------------------------------------

    def handle_step(self, status: int, body: Any) -> Answer:
        """Answer one doorbell on the queue of ``status``: its step, timers, a timeout or an auto-resume.

        Never raises for bad input. Raises only when the store cannot be
        reached to count a failure; the claim then expires and the attempt
        is counted by whoever answers the doorbell next.
        """
        msg = self._receive(self.definition.queue_for(status), body, status)
        if isinstance(msg, Outcome):
            return Answer(msg)
        if msg.action is Action.DELETE:
            log.error("dropping delete request on a step queue", extra={"workflow": self.definition.name})
            return Answer(Outcome.DROPPED_INVALID)
        return self._answer(msg)

    def handle_delete(self, body: Any) -> Answer:
        """Answer a data-deletion request: scrub the object and its copies in history."""
        msg = self._receive(self.definition.delete_queue(), body, None)
        if isinstance(msg, Outcome):
            return Answer(msg)
        if msg.action is not Action.DELETE:
            log.error("dropping a %s message on the data-deletion queue", msg.action.value)
            return Answer(Outcome.DROPPED_INVALID)
        return self._answer(msg)

    def handle_hook(self, event: str, body: Any) -> Answer:
        """Answer one doorbell on ``{workflow}.hooks.{event}``: run that one hook."""
        return self.hooks.handle(event, body)

    def _receive(self, queue: str, body: Any, expected_status: int | None) -> Message | Outcome:
        name = self.definition.name
        try:
            return parse_message(name, body, expected_status=expected_status)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return Outcome.DROPPED_INVALID

    def _answer(self, msg: Message) -> Answer:
        name = self.definition.name
        now = self.clock.now()
        token = uuid.uuid4().hex
        claim = self.store.claim(
            msg.id, msg.run_id, msg.version, token, now, now + self.options.redeliver_after, attempt=msg.attempt
        )
        record = claim.record
        extra = {"workflow": name, "run_id": msg.run_id}
        if record is None:
            log.error(
                "dropping message for unknown run %s of workflow %s at status %s",
                msg.run_id,
                name,
                self.definition.status_name(msg.status),
                extra=extra,
            )
            return Answer(Outcome.DROPPED_UNKNOWN_RUN, msg.id)
        if record.workflow_name != name:
            log.error("dropping message: run %s belongs to workflow %s, not %s", msg.run_id, record.workflow_name, name)
            self._let_go(claim.claimed, msg.id, token)
            return Answer(Outcome.DROPPED_INVALID, msg.id)
        if record.meta.version != msg.version or record.status != msg.status:
            log.debug(
                "dropping stale message for run %s: message v%d at %s, record v%d at %s",
                msg.run_id,
                msg.version,
                self.definition.status_name(msg.status),
                record.meta.version,
                self.definition.status_name(record.status),
                extra=extra,
            )
            if claim.doorbell is not None:
                # The run moved on without deleting this row (it was written after the move): it is dead.
                self.store.delete_outbox([msg.id])
            return Answer(Outcome.DROPPED_STALE, msg.id)
        if claim.doorbell is None:
            log.debug("dropping message for run %s: its doorbell %s was already answered", msg.run_id, msg.id)
            return Answer(Outcome.DROPPED_STALE, msg.id)
        if not claim.claimed and msg.attempt is not None and msg.attempt != claim.doorbell.retries + 1:
            log.info(
                "dropping a copy of attempt %d at %s: attempt %d is next",
                msg.attempt,
                msg.id,
                claim.doorbell.retries + 1,
                extra=extra,
            )
            return Answer(Outcome.DROPPED_STALE, msg.id)
        if not claim.claimed:
            log.info(
                "dropping a copy of %s: another worker is running it (claimed until %s)",
                msg.id,
                claim.doorbell.claimed_until,
                extra=extra,
            )
            return Answer(Outcome.DROPPED_RUNNING, msg.id)
        attempt = Attempt(msg, record, token, claim.failures + 1)
        if msg.action is Action.RESUME:
            return self._auto_resume(attempt)
        wanted = (RunState.REQUESTED_DATA_DELETED,) if msg.action is Action.DELETE else ACTIVE
        if record.run_state not in wanted:
            log.debug("dropping message for run %s (%s)", msg.run_id, record.run_state.name)
            self._let_go(True, msg.id, token)
            return Answer(Outcome.DROPPED_STOPPED, msg.id)
        try:
            if claim.abandoned:
                raise AttemptAbandoned(
                    workflow=name, run_id=msg.run_id, status=self.definition.status_name(record.status)
                )
            limit = self._pause_after(msg)
            if limit and claim.failures >= limit:
                # The attempt that reached the limit was counted but could not pause the run.
                return self._pause_after_errors(attempt, None)
            return Answer(self._work(attempt), msg.id, attempt.number)
        except Exception as exc:
            return self._fail(attempt, exc)

    def _let_go(self, claimed: bool, message_id: str, token: str) -> None:
        if claimed:
            self.store.release_claim(message_id, token)

    def _work(self, attempt: Attempt) -> Outcome:
        action = attempt.message.action
        if action is Action.STEP:
            return self._run_step(attempt)
        if action is Action.TIMERS:
            return self._schedule_timeouts(attempt)
        if action is Action.TIMEOUT:
            return self._run_timeout(attempt)
        return self._delete_data(attempt)

    def _auto_resume(self, attempt: Attempt) -> Answer:
        record = attempt.record
        if record.run_state != RunState.PAUSED:
            self._let_go(True, attempt.message.id, attempt.token)
            return Answer(Outcome.DROPPED_STALE, attempt.message.id)
        if not self.change_run_state(record, RunState.RUNNING, "", self.clock.now()):
            return Answer(self._superseded(record), attempt.message.id)
        log.info(
            "run %s of workflow %s resumed automatically after %s paused",
            record.run_id,
            self.definition.name,
            self.options.auto_resume_after,
            extra={"workflow": self.definition.name, "run_id": record.run_id},
        )
        return Answer(Outcome.RESUMED, attempt.message.id)

    def _run_step(self, attempt: Attempt) -> Outcome:
        record, msg = attempt.record, attempt.message
        spec = self.definition.steps.get(record.status)
        if spec is None:
            log.error("dropping step message for %s, which has no step", self.definition.queue_for(record.status))
            self._let_go(True, msg.id, attempt.token)
            return Outcome.DROPPED_INVALID
        limit = spec.options.parallel_count
        if limit:
            now = self.clock.now()
            # The slot is held under the doorbell's id, so renewing the claim renews the slot.
            if not self.store.acquire_slot(
                self.definition.name, spec.status, limit, msg.id, now, now + self.options.redeliver_after
            ):
                # All slots are busy: ring again shortly, through the relay, instead of holding a worker.
                wait = timedelta(seconds=random.uniform(SLOT_RETRY_MIN_SECONDS, SLOT_RETRY_MAX_SECONDS))
                self.store.release_claim(msg.id, attempt.token, due_at=now + wait)
                return Outcome.WAITING_FOR_SLOT
        try:
            run = self.to_run(record)
            result = spec.fn(run)
            if spec.is_async or asyncio.iscoroutine(result):
                result = asyncio.run(result)
            return self.apply_result(spec.status, spec.destinations, record, run, result, "step", attempt)
        finally:
            if limit:
                self.store.release_slot(msg.id)

    def _schedule_timeouts(self, attempt: Attempt) -> Outcome:
        bells = self.timeout_doorbells(attempt.record, self.clock.now())
        if not self.store.replace_doorbell(attempt.message.id, attempt.token, bells):
            return self._superseded(attempt.record)
        return Outcome.TIMEOUTS_SCHEDULED

    def _run_timeout(self, attempt: Attempt) -> Outcome:
        record, index = attempt.record, attempt.message.timeout
        specs = self.definition.timeouts.get(record.status, [])
        if index >= len(specs):
            log.error("dropping timeout %d of %s: no such timeout", index, self.definition.status_name(record.status))
            self._let_go(True, attempt.message.id, attempt.token)
            return Outcome.DROPPED_INVALID
        timeout = specs[index]
        run = self.to_run(record)
        result = timeout.fn(run, self.clock.now())
        if timeout.is_async or asyncio.iscoroutine(result):
            result = asyncio.run(result)
        outcome = self.apply_result(timeout.status, timeout.destinations, record, run, result, "timeout", attempt)
        return Outcome.TIMED_OUT if outcome in (Outcome.MOVED, Outcome.COMPLETED) else outcome

    def _delete_data(self, attempt: Attempt) -> Outcome:
        record = attempt.record
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

    def apply_result(
        self,
        source: int,
        destinations: tuple[int, ...],
        record: Record,
        run: Run[T, S],
        result: object,
        what: str,
        attempt: Attempt | None = None,
    ) -> Outcome:
        """Commit what a step, callback or timeout returned.

        Raises ``InvalidTransition`` for a status that is not an allowed
        destination and ``SerializationError`` for an object that cannot be
        stored: failed attempts, like an exception from the function itself.
        """
        now = self.clock.now()
        if isinstance(result, Directive):
            return self._apply_directive(record, run, result, now, attempt)
        dest = _as_status(result)
        if dest is None or dest not in destinations:
            raise InvalidTransition(
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

    def _apply_directive(
        self, record: Record, run: Run[T, S], directive: Directive, now: datetime, attempt: Attempt | None
    ) -> Outcome:
        if directive.kind is DirectiveKind.SKIP:
            if attempt is not None:
                # The doorbell stays: it rings again after ``redeliver_after``, like a message not yet answered.
                self.store.release_claim(attempt.message.id, attempt.token)
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

    def _options_at(self, status: int) -> tuple[timedelta, timedelta, int]:
        """``(err_backoff, max_backoff, pause_after_err_count)`` for failures at ``status``.

        One error counter per run and status is shared by its step, its timers
        and its timeouts, so all of them follow the step's options (the
        workflow's defaults where the status has no step or the step sets none).
        """
        spec = self.definition.steps.get(status)
        opts = spec.options if spec is not None else None
        base = (opts.err_backoff if opts else None) or self.options.err_backoff
        cap = (opts.max_backoff if opts else None) or self.options.max_backoff
        limit = opts.pause_after_err_count if opts and opts.pause_after_err_count is not None else None
        return base, cap, self.options.pause_after_err_count if limit is None else limit

    def backoff(self, spec: StepSpec, attempt: int) -> timedelta:
        """The delay before the attempt after ``attempt`` fails, for the step ``spec``."""
        base, cap, _ = self._options_at(spec.status)
        return backoff(base, cap, attempt)

    def _pause_after(self, msg: Message) -> int:
        # A run waiting for its data to be deleted cannot be paused: deletion retries until it succeeds.
        return 0 if msg.action is Action.DELETE else self._options_at(msg.status)[2]

    def _fail(self, attempt: Attempt, exc: BaseException) -> Answer:
        limit = self._pause_after(attempt.message)
        if limit and attempt.number >= limit:
            return self._pause_after_errors(attempt, exc)
        record, msg = attempt.record, attempt.message
        now = self.clock.now()
        info = capture_error(exc, now)
        base, cap, _ = self._options_at(record.status)
        plan = plan_retry(
            now,
            backoff(base, cap, attempt.number),
            max_countdown=self.options.max_retry_countdown,
            grace=self.options.redeliver_after,
        )
        count = self.store.record_failure(
            msg.id, attempt.token, record.run_id, record.status, info, due_at=plan.backstop_at, retries=attempt.number
        )
        if count is None:
            return Answer(self._superseded(record), msg.id, attempt.number, exc)
        log.warning(
            "%s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            self._what(msg),
            self.definition.name,
            record.run_id,
            attempt.number,
            (plan.retry_at - now).total_seconds(),
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": record.run_id, "attempt": attempt.number},
        )
        return Answer(Outcome.RETRY_SCHEDULED, msg.id, attempt.number, exc, plan)

    def _pause_after_errors(self, attempt: Attempt, exc: BaseException | None) -> Answer:
        """Count the last failed attempt (``exc``; None when it was counted already) and pause the run."""
        record, msg = attempt.record, attempt.message
        now = self.clock.now()
        if exc is not None:
            info = capture_error(exc, now)
            count = self.store.record_failure(
                msg.id, attempt.token, record.run_id, record.status, info, due_at=None, retries=attempt.number
            )
            if count is None:
                return Answer(self._superseded(record), msg.id, attempt.number, exc)
        else:
            self.store.release_claim(msg.id, attempt.token)
            last = next((e.last_error for e in self.store.errors(record.run_id) if e.status == record.status), None)
            info = last if last is not None else capture_error(AttemptAbandoned(run_id=record.run_id), now)
            exc = AttemptAbandoned(info.message, workflow=self.definition.name, run_id=record.run_id)
        current = RunState.RUNNING if record.run_state == RunState.INITIATED else record.run_state
        check_transition(current, RunState.PAUSED, workflow=self.definition.name, run_id=record.run_id)
        new = self.next_record(record, run_state=RunState.PAUSED, reason=pause_reason(info), now=now)
        if not self.commit(new, record.meta.version, now):
            return Answer(self._superseded(record), msg.id, attempt.number, exc)
        log.warning(
            "run %s of workflow %s paused at %s after %d failed attempts: %s: %s",
            record.run_id,
            self.definition.name,
            self.definition.status_name(record.status),
            attempt.number,
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": record.run_id, "attempt": attempt.number},
        )
        return Answer(Outcome.PAUSED_AFTER_ERRORS, msg.id, attempt.number, exc)

    def callback_failed(self, record: Record, exc: BaseException) -> None:
        """Count a callback's failure at the run's status; pause the run on the ``pause_after_err_count``-th.

        Callbacks run in the caller's process with no doorbell, so the count is
        kept without one; the caller gets the exception.
        """
        now = self.clock.now()
        info = capture_error(exc, now)
        count = self.store.record_error(record.run_id, record.status, info)
        limit = self._options_at(record.status)[2]
        if not limit or count < limit:
            return
        new = self.next_record(record, run_state=RunState.PAUSED, reason=pause_reason(info), now=now)
        if self.commit(new, record.meta.version, now):
            log.warning(
                "run %s of workflow %s paused at %s after %d failed callbacks: %s: %s",
                record.run_id,
                self.definition.name,
                self.definition.status_name(record.status),
                count,
                info.error_type,
                info.message,
                extra={"workflow": self.definition.name, "run_id": record.run_id},
            )

    def _what(self, msg: Message) -> str:
        status = self.definition.status_name(msg.status)
        if msg.action is Action.STEP:
            return f"step {status}"
        if msg.action is Action.TIMEOUT:
            return f"timeout {msg.timeout} at {status}"
        if msg.action is Action.TIMERS:
            return f"the timers of {status}"
        return f"{msg.action.value} at {status}"

    def _describe(self, value: object) -> str:
        dest = _as_status(value)
        return self.definition.status_name(dest) if dest is not None else repr(value)


def _as_status(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)
