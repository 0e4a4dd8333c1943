"""What answering one doorbell did, and what the broker should do about it.

The core decides; the adapters report. A Celery task turns an ``Answer`` into
its task state: a retried attempt becomes ``RETRY`` (through ``Task.retry``
when the retry is near, the database alone when it is far), the attempt that
pauses a run ``FAILURE`` with the exception, everything else ``SUCCESS`` with
the outcome's value as its result.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


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


class Outcome(enum.Enum):
    """What answering one step, timeout or deletion doorbell did; shown in worker logs and Flower."""

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
    WAITING_FOR_LAG = "waiting_for_lag"
    """The run has not been at the status for the step's ``consume_lag`` yet: its doorbell rings then."""
    TIMEOUTS_SCHEDULED = "timeouts_scheduled"
    TIMED_OUT = "timed_out"
    DROPPED_STALE = "dropped_stale"
    DROPPED_RUNNING = "dropped_running"
    """Another worker holds this doorbell: its work is running there now."""
    DROPPED_STOPPED = "dropped_stopped"
    DROPPED_UNKNOWN_RUN = "dropped_unknown_run"
    DROPPED_INVALID = "dropped_invalid"
    SUPERSEDED = "superseded"


class HookOutcome(enum.Enum):
    """What answering one hook doorbell did."""

    SUCCEEDED = "hook_succeeded"
    RETRY_SCHEDULED = "hook_retry_scheduled"
    DROPPED_INVALID = "dropped_invalid"
    DROPPED_DONE = "dropped_done"
    DROPPED_RUNNING = "dropped_running"
    LEFT_UNKNOWN = "hook_unknown_here"
    """This process does not know the hook: its doorbell rings again later, for a worker that does."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one attempt at a doorbell's work.

    ``attempt`` is 1 for the first attempt and grows with each failure
    counted in the database. ``error`` is set for a failed attempt: with
    ``retry`` when another attempt is planned, without when the run was paused.
    """

    outcome: Outcome | HookOutcome
    message_id: str | None = None
    attempt: int = 1
    error: BaseException | None = None
    retry: RetryPlan | None = None
