"""Failed attempts: what is kept of one, and when the next attempt comes.

Every failure before a commit is a failed attempt, whatever raised it: the
step, callback or timeout function, a timer, encoding the object, a store
write, or the process itself dying. Each is counted in the database; the
count decides the backoff (``err_backoff * 2**(attempt-1)``, capped, with
jitter, as Celery's own ``retry_backoff``) and, at ``pause_after_err_count``,
pauses the run.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ports import ErrorInfo
from .text import MAX_NAME_LENGTH, storable_text

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


def backoff(base: timedelta, cap: timedelta, attempt: int) -> timedelta:
    """``base * 2**(attempt-1)``, at most ``cap``, times a random factor in [0.75, 1.0].

    The jitter keeps runs that failed together (an outage) from retrying
    together, while each delay stays longer than three quarters of the last.
    """
    exponent = min(max(attempt - 1, 0), 32)
    delay = min(base * (1 << exponent), cap)
    return delay * random.uniform(JITTER_LOW, 1.0)


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """When a failed attempt is tried again, and how the broker is told.

    ``countdown`` (seconds) is set when the retry goes through the broker now
    (Celery's ``Task.retry``); the database keeps ``backstop_at`` so that a
    retry lost with the broker is rung again by the relay. Without a
    countdown the retry waits in the database only, until ``retry_at``.
    """

    retry_at: datetime
    backstop_at: datetime
    countdown: float | None


def plan_retry(now: datetime, delay: timedelta, *, max_countdown: timedelta, grace: timedelta) -> RetryPlan:
    """Short delays become broker countdowns (backed by a row due ``grace`` later); long ones stay in the database."""
    retry_at = now + delay
    if delay <= max_countdown:
        return RetryPlan(retry_at=retry_at, backstop_at=retry_at + grace, countdown=delay.total_seconds())
    return RetryPlan(retry_at=retry_at, backstop_at=retry_at, countdown=None)
