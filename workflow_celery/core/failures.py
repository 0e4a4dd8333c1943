"""Failed attempts: what is kept of one, and when the next attempt comes.

Every failure before a commit is a failed attempt, whatever raised it: the
step, callback or timeout function, a timer, encoding the object, a store
write, or the process itself dying. Each is counted in the database; the
count decides the backoff (``err_backoff * 2**(attempt-1)``, capped, with
jitter, as Celery's own ``retry_backoff``) and, at ``pause_after_err_count``,
pauses the run.
"""

from __future__ import annotations

import enum
import logging
import random
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .answer import Answer, Outcome, RetryPlan
from .definition import Definition
from .doorbell import Action, Message
from .errors import AttemptAbandoned
from .options import WorkflowOptions
from .ports import Claims, Clock, ErrorInfo, ErrorLog
from .record import Record
from .text import MAX_NAME_LENGTH, storable_text

if TYPE_CHECKING:
    from .transition import Transitions

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 2000
"""Characters kept of an exception's message."""
MAX_TRACEBACK = 20_000
"""Characters kept of a traceback (its end: the frames nearest the error)."""
TRACEBACK_FRAMES = 30
PAUSE_REASON_MAX_ERRORS = "max error retry threshold hit"
JITTER_LOW = 0.75


def capture_error(exc: BaseException, now: datetime) -> ErrorInfo:
    """What is kept of a failed attempt. Never raises, whatever ``exc`` carries."""
    try:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    except Exception:
        kind = "unknown"
    try:
        trace = "".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES))
    except Exception:
        trace = f"{kind}: (the traceback could not be formatted)"
    if len(trace) > MAX_TRACEBACK:
        # The end of a traceback names the error and the frames closest to it.
        trace = f"[... {len(trace) - MAX_TRACEBACK} characters cut]\n" + trace[-MAX_TRACEBACK:]
    return ErrorInfo(
        error_type=storable_text(kind, limit=MAX_NAME_LENGTH),
        message=storable_text(exc, limit=MAX_ERROR_MESSAGE),
        traceback=storable_text(trace, limit=MAX_TRACEBACK + 100),
        occurred_at=now,
    )


def pause_reason(info: ErrorInfo) -> str:
    """The reason stored on a run paused after too many errors."""
    return storable_text(
        f"{PAUSE_REASON_MAX_ERRORS}: {info.error_type.rsplit('.', 1)[-1]}: {info.message}", limit=MAX_ERROR_MESSAGE
    )


def backoff(base: timedelta, cap: timedelta, attempt: int, *, jitter: bool = True) -> timedelta:
    """``base * 2**(attempt-1)``, at most ``cap``, times a random factor in [0.75, 1.0] unless ``jitter=False``.

    The one backoff of the library: failed steps, timeouts and hooks, unknown
    hooks left to other workers, and the relay's growing intervals between
    re-publications of a doorbell nobody answers. The jitter keeps runs that
    failed together (an outage) from retrying together, while each delay stays
    longer than three quarters of the last. The exponent is capped, so a row
    rung a hundred times does not overflow ``timedelta``.
    """
    if base <= timedelta(0):
        return timedelta(0)
    exponent = min(max(attempt - 1, 0), 62)
    steps = cap // base
    delay = cap if steps < (1 << exponent) else base * (1 << exponent)
    return delay * random.uniform(JITTER_LOW, 1.0) if jitter else delay


def plan_retry(now: datetime, delay: timedelta, *, max_countdown: timedelta, grace: timedelta) -> RetryPlan:
    """Short delays become broker countdowns (backed by a row due ``grace`` later); long ones stay in the database."""
    retry_at = now + delay
    if delay <= max_countdown:
        return RetryPlan(retry_at=retry_at, backstop_at=retry_at + grace, countdown=delay.total_seconds())
    return RetryPlan(retry_at=retry_at, backstop_at=retry_at, countdown=None)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed attempt at a doorbell's work."""

    message: Message
    record: Record
    token: str
    """The claim this attempt holds on the doorbell."""
    number: int
    """1 for the first attempt; the failures counted so far plus one."""


class Failures(Generic[T, S]):
    """What happens to a failed attempt: counted, then retried after a backoff, or the run paused.

    One error counter per run and status is shared by the status' step, its
    timers and its timeouts, so all of them follow the step's options (the
    workflow's where the status has no step or the step sets none).
    """

    def __init__(
        self,
        definition: Definition[T, S],
        errors: ErrorLog,
        claims: Claims,
        transitions: Transitions[T, S],
        clock: Clock,
        options: WorkflowOptions,
    ) -> None:
        self.definition = definition
        self.errors = errors
        self.claims = claims
        self.transitions = transitions
        self.clock = clock
        self.options = options

    def options_at(self, status: int) -> tuple[timedelta, timedelta, int]:
        """``(err_backoff, max_backoff, pause_after_err_count)`` for failures at ``status``."""
        spec = self.definition.steps.get(status)
        opts = spec.options if spec is not None else None
        base = (opts.err_backoff if opts else None) or self.options.err_backoff
        cap = (opts.max_backoff if opts else None) or self.options.max_backoff
        limit = opts.pause_after_err_count if opts and opts.pause_after_err_count is not None else None
        return base, cap, self.options.pause_after_err_count if limit is None else limit

    def pause_after(self, msg: Message) -> int:
        """The failed attempts after which the run is paused; 0 for never."""
        # A run waiting for its data to be deleted cannot be paused: deletion retries until it succeeds.
        return 0 if msg.action is Action.DELETE else self.options_at(msg.status)[2]

    def fail(self, attempt: Attempt, exc: BaseException) -> Answer:
        """Count a failed attempt and plan the next one, or pause the run on the last allowed failure."""
        limit = self.pause_after(attempt.message)
        if limit and attempt.number >= limit:
            return self.pause(attempt, exc)
        record, msg = attempt.record, attempt.message
        now = self.clock.now()
        info = capture_error(exc, now)
        base, cap, _ = self.options_at(record.status)
        plan = plan_retry(
            now,
            backoff(base, cap, attempt.number),
            max_countdown=self.options.max_retry_countdown,
            grace=self.options.redeliver_after,
        )
        count = self.errors.record_failure(
            msg.id, attempt.token, record.run_id, record.status, info, due_at=plan.backstop_at, retries=attempt.number
        )
        if count is None:
            return Answer(self.transitions.superseded(record), msg.id, attempt.number, exc)
        log.warning(
            "%s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            describe_work(self.definition, msg),
            self.definition.name,
            record.run_id,
            attempt.number,
            (plan.retry_at - now).total_seconds(),
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": record.run_id, "attempt": attempt.number},
        )
        return Answer(Outcome.RETRY_SCHEDULED, msg.id, attempt.number, exc, plan)

    def pause(self, attempt: Attempt, exc: BaseException | None) -> Answer:
        """Count the last failed attempt (``exc``; None when it was counted already) and pause the run."""
        record, msg = attempt.record, attempt.message
        now = self.clock.now()
        if exc is not None:
            info = capture_error(exc, now)
            count = self.errors.record_failure(
                msg.id, attempt.token, record.run_id, record.status, info, due_at=None, retries=attempt.number
            )
            if count is None:
                return Answer(self.transitions.superseded(record), msg.id, attempt.number, exc)
        else:
            self.claims.release_claim(msg.id, attempt.token)
            last = next((e.last_error for e in self.errors.errors(record.run_id) if e.status == record.status), None)
            info = last if last is not None else capture_error(AttemptAbandoned(run_id=record.run_id), now)
            exc = AttemptAbandoned(info.message, workflow=self.definition.name, run_id=record.run_id)
        if not self.transitions.pause(record, pause_reason(info), now):
            return Answer(self.transitions.superseded(record), msg.id, attempt.number, exc)
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
        count = self.errors.record_error(record.run_id, record.status, info)
        limit = self.options_at(record.status)[2]
        if limit and count >= limit and self.transitions.pause(record, pause_reason(info), now):
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


def describe_work(definition: Definition[Any, Any], msg: Message) -> str:
    """What a doorbell asks for, for log lines: ``step CREATED``, ``timeout 0 at WAITING``, …"""
    status = definition.status_name(msg.status)
    if msg.action is Action.STEP:
        return f"step {status}"
    if msg.action is Action.TIMEOUT:
        return f"timeout {msg.timeout} at {status}"
    if msg.action is Action.TIMERS:
        return f"the timers of {status}"
    return f"{msg.action.value} at {status}"
