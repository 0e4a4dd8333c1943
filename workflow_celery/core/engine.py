"""Answering one doorbell: claim it, check it still matters, do its work, commit.

This is the code path every worker runs, whatever delivers the message (a
Celery worker, or the in-process runner of tests and the demo). Answering
starts with a claim: one round trip reads the run and takes the doorbell for
this attempt, so at most one process works on a given doorbell at a time
however many copies of its message arrive. Everything that can fail before
the commit (the user's function, a timer, encoding the object, the store) is
a failed attempt, handed to ``Failures``.
"""

from __future__ import annotations

import enum
import logging
import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from .answer import Answer, Outcome
from .codec import ObjectCodec
from .definition import Definition
from .doorbell import ACTIVE, Action, Message, Planner, parse_message
from .errors import AttemptAbandoned, WorkflowError
from .failures import Attempt, Failures
from .options import WorkflowOptions
from .ports import Claim, Claims, Clock, Outbox, RunStore, Slots
from .record import Record
from .run import call_user
from .run_state import RunState
from .transition import Transitions
from .typed import Typed

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

SLOT_RETRY_MIN_SECONDS = 0.5
SLOT_RETRY_MAX_SECONDS = 1.5


class EngineStore(RunStore, Outbox, Claims, Slots, Protocol):
    """The roles of the store the engine answers doorbells with (failures go through ``Failures``)."""


class Engine(Generic[T, S]):
    """Answers the doorbells of one workflow's status queues and data-deletion queue."""

    def __init__(
        self,
        definition: Definition[T, S],
        store: EngineStore,
        clock: Clock,
        options: WorkflowOptions,
        codec: ObjectCodec[T],
        typed: Typed[T, S],
        planner: Planner,
        transitions: Transitions[T, S],
        failures: Failures[T, S],
    ) -> None:
        self.definition = definition
        self.store = store
        self.clock = clock
        self.options = options
        self.codec = codec
        self.typed = typed
        self.planner = planner
        self.transitions = transitions
        self.failures = failures
        self.custom_delete: Callable[[T], T | None] | None = options.custom_delete

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

    def _receive(self, queue: str, body: Any, expected_status: int | None) -> Message | Outcome:
        name = self.definition.name
        try:
            return parse_message(name, body, expected_status=expected_status)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return Outcome.DROPPED_INVALID

    def _answer(self, msg: Message) -> Answer:
        now = self.clock.now()
        token = uuid.uuid4().hex
        until = now + self.options.redeliver_after
        claim = self.store.claim(msg.id, msg.run_id, msg.version, token, now, until, attempt=msg.attempt)
        record = claim.record
        dropped = self._dropped(msg, claim, token)
        if dropped is not None:
            return Answer(dropped, msg.id)
        assert record is not None
        attempt = Attempt(msg, record, token, claim.failures + 1)
        if msg.action is Action.RESUME:
            return self._auto_resume(attempt)
        wanted = (RunState.REQUESTED_DATA_DELETED,) if msg.action is Action.DELETE else ACTIVE
        if record.run_state not in wanted:
            log.debug("dropping message for run %s (%s)", msg.run_id, record.run_state.name)
            self.store.release_claim(msg.id, token)
            return Answer(Outcome.DROPPED_STOPPED, msg.id)
        try:
            if claim.abandoned:
                name = self.definition.name
                raise AttemptAbandoned(workflow=name, run_id=msg.run_id, status=self.definition.status_name(msg.status))
            limit = self.failures.pause_after(msg)
            if limit and claim.failures >= limit:
                # The attempt that reached the limit was counted but could not pause the run.
                return self.failures.pause(attempt, None)
            answer = Answer(self._work(attempt), msg.id, attempt.number)
        except Exception as exc:
            answer = self.failures.fail(attempt, exc)
        if answer.outcome is Outcome.SUPERSEDED:
            self.ring_waiting(record.run_id)
        return answer

    def abandon(self, message_id: str, run_id: str, *, hook: bool) -> None:
        """The process running an attempt at ``message_id`` died: expire its claim, ring what waited for it.

        The next claimer counts the lost attempt (``abandon_claim``). If an
        operator had moved the run meanwhile, its new step waited for this
        attempt: it is rung now (a hook's doorbell holds nothing back).
        """
        self.store.abandon_claim(message_id, self.clock.now())
        if not hook:
            self.ring_waiting(run_id, besides=message_id)

    def ring_waiting(self, run_id: str, *, besides: str | None = None) -> None:
        """Ring now the run's doorbells that were dropped while a superseded attempt ran, now that it has ended.

        Called when such an attempt ends here, and by ``abandon`` when the
        process running one died (``besides``: the dead attempt's own doorbell,
        which the relay rings).

        Without this they would wait for the relay's next round, which grows
        from ``redeliver_after`` to ``max_redeliver_interval`` with every ring.
        Only what a write rings at once is rung (the step, its timers, a data
        deletion): an automatic resume or a timeout waits for its time, and a
        doorbell another worker holds is left to it.
        """
        now = self.clock.now()
        try:
            waiting = self.store.outbox(run_id)
        except Exception:  # the relay rings them later; this attempt's answer stands
            log.warning("could not read the doorbells of run %s after a superseded attempt", run_id, exc_info=True)
            return
        at_once = {Action.STEP.value, Action.TIMERS.value, Action.DELETE.value}
        self.transitions.publish([
            m for m in waiting
            if m.kind in ("step", "delete") and m.body.get("action", Action.STEP.value) in at_once
            and (m.claimed_until is None or m.claimed_until <= now) and m.id != besides
        ])  # fmt: skip

    def _dropped(self, msg: Message, claim: Claim, token: str) -> Outcome | None:
        """Why this message is not worth running (unknown run, stale, a copy, …); None when it is ours to run."""
        name = self.definition.name
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
            return Outcome.DROPPED_UNKNOWN_RUN
        if record.workflow_name != name:
            log.error("dropping message: run %s belongs to workflow %s, not %s", msg.run_id, record.workflow_name, name)
            if claim.claimed:
                self.store.release_claim(msg.id, token)
            return Outcome.DROPPED_INVALID
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
            return Outcome.DROPPED_STALE
        bell = claim.doorbell
        if bell is None:
            log.debug("dropping message for run %s: its doorbell %s was already answered", msg.run_id, msg.id)
            return Outcome.DROPPED_STALE
        if not claim.claimed and msg.attempt is not None and msg.attempt != bell.retries + 1:
            log.info(
                "dropping a copy of attempt %d at %s: attempt %d is next",
                msg.attempt,
                msg.id,
                bell.retries + 1,
                extra=extra,
            )
            return Outcome.DROPPED_STALE
        if not claim.claimed and (bell.claimed_until is None or bell.claimed_until <= self.clock.now()):
            log.info(
                "not running %s yet: an attempt at the run's previous step still runs (the run was moved by an "
                "operator or a callback meanwhile); the doorbell rings again once it has ended",
                msg.id,
                extra=extra,
            )
            return Outcome.DROPPED_RUNNING
        if not claim.claimed:
            log.info(
                "dropping a copy of %s: another worker is running it (claimed until %s)",
                msg.id,
                bell.claimed_until,
                extra=extra,
            )
            return Outcome.DROPPED_RUNNING
        return None

    def _work(self, attempt: Attempt) -> Outcome:
        action = attempt.message.action
        if action is Action.STEP:
            outcome = self._run_step(attempt)
        elif action is Action.TIMERS:
            outcome = self._schedule_timeouts(attempt)
        elif action is Action.TIMEOUT:
            outcome = self._run_timeout(attempt)
        else:
            outcome = self._delete_data(attempt)
        if outcome is Outcome.SKIPPED and action is Action.TIMEOUT:
            # A timeout fires once: one that leaves the run where it is is done (the original fires it again
            # at every poll), and the status' other timeouts still fire when they are due.
            self.store.replace_doorbell(attempt.message.id, attempt.token, [])
        elif outcome is Outcome.SKIPPED:
            # The doorbell stays: it rings again after ``redeliver_after``, like a message not yet answered.
            self.store.release_claim(attempt.message.id, attempt.token)
        elif outcome is Outcome.SUPERSEDED:
            # Kept as ``superseded`` while this attempt ran (an operator moved the run): done with it now.
            self.store.replace_doorbell(attempt.message.id, attempt.token, [])
        return outcome

    def _auto_resume(self, attempt: Attempt) -> Answer:
        record = attempt.record
        if record.run_state != RunState.PAUSED:
            self.store.release_claim(attempt.message.id, attempt.token)
            return Answer(Outcome.DROPPED_STALE, attempt.message.id)
        if not self.transitions.change_run_state(record, RunState.RUNNING, "", self.clock.now()):
            return Answer(self.transitions.superseded(record), attempt.message.id)
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
            self.store.release_claim(msg.id, attempt.token)
            return Outcome.DROPPED_INVALID
        ready = self.planner.ready_at(record)
        if ready > self.clock.now():
            # Rung before its time (by hand, or a doorbell from before the lag was set): ring again then.
            self.store.release_claim(msg.id, attempt.token, due_at=ready)
            return Outcome.WAITING_FOR_LAG
        limit = spec.options.parallel_count
        if limit:
            now = self.clock.now()
            # The slot is held under the doorbell's id, so renewing the claim renews the slot.
            until = now + self.options.redeliver_after
            if not self.store.acquire_slot(self.definition.name, spec.status, limit, msg.id, now, until):
                # All slots are busy: ring again shortly, through the relay, instead of holding a worker.
                wait = timedelta(seconds=random.uniform(SLOT_RETRY_MIN_SECONDS, SLOT_RETRY_MAX_SECONDS))
                self.store.release_claim(msg.id, attempt.token, due_at=now + wait)
                return Outcome.WAITING_FOR_SLOT
        try:
            run = self.typed.run(record)
            result = call_user(spec.fn, run)
            return self.transitions.apply(spec.status, spec.destinations, record, run, result, "step")
        finally:
            if limit:
                self.store.release_slot(msg.id)

    def _schedule_timeouts(self, attempt: Attempt) -> Outcome:
        record = attempt.record
        bells = self.planner.timeouts(record, self.typed.run(record), self.clock.now())
        if not self.store.replace_doorbell(attempt.message.id, attempt.token, bells):
            return self.transitions.superseded(record)
        return Outcome.TIMEOUTS_SCHEDULED

    def _run_timeout(self, attempt: Attempt) -> Outcome:
        record, index = attempt.record, attempt.message.timeout
        specs = self.definition.timeouts.get(record.status, [])
        if index >= len(specs):
            log.error("dropping timeout %d of %s: no such timeout", index, self.definition.status_name(record.status))
            self.store.release_claim(attempt.message.id, attempt.token)
            return Outcome.DROPPED_INVALID
        timeout = specs[index]
        run = self.typed.run(record)
        result = call_user(timeout.fn, run, self.clock.now())
        outcome = self.transitions.apply(timeout.status, timeout.destinations, record, run, result, "timeout")
        return Outcome.TIMED_OUT if outcome in (Outcome.MOVED, Outcome.COMPLETED) else outcome

    def _delete_data(self, attempt: Attempt) -> Outcome:
        record = attempt.record
        replacement = self.deleted_object(record)
        # Scrubbing history first is safe to repeat: if the commit below loses, the request is rung again.
        self.store.scrub_history(record.run_id, replacement)
        now = self.clock.now()
        new = self.transitions.next_record(record, run_state=RunState.DATA_DELETED, obj=replacement, now=now)
        if not self.transitions.commit(new, record, now):
            return self.transitions.superseded(record)
        log.info("deleted the data of run %s of workflow %s", record.run_id, self.definition.name)
        return Outcome.DATA_DELETED

    def check_deletable(self) -> None:
        """Refuse, at build time, an object type whose deleted runs could not be read back."""
        if self.custom_delete is None:
            self.codec.zero()

    def deleted_object(self, record: Record) -> bytes:
        """What replaces a run's object when its data is deleted: ``custom_delete``'s, or the type's zero value."""
        if self.custom_delete is not None:
            obj = self.codec.decode(record.object, run_id=record.run_id)
            result = self.custom_delete(obj)
            return self.codec.encode(obj if result is None else result, run_id=record.run_id)
        return self.codec.encode(self.codec.zero(), run_id=record.run_id)
