"""What the store keeps besides runs: doorbells, claims and error counters, as values.

The store's roles (``ports``) take and return these; every implementation maps
them to its own rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .record import Record
from .text import MAX_NAME_LENGTH, storable_text

OutboxKind = Literal["step", "hook", "delete", "superseded"]
"""``superseded``: a step doorbell whose attempt was still running when an operator or a callback moved the run."""
MAX_ERROR_TEXT = 25_000
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A doorbell: a Celery message to publish, kept in the database until answered.

    Step doorbells are deleted by the transaction that moves their run on, so a
    row still present after ``due_at`` means the message was lost, is stuck
    behind a dead worker, or was never published; the relay rings it again.
    """

    id: str
    workflow_name: str
    run_id: str
    kind: OutboxKind
    queue: str
    task: str
    body: Mapping[str, Any]
    created_at: datetime
    due_at: datetime
    attempts: int = 0
    """How many times the relay has published this row (its redelivery backoff grows with it)."""
    retries: int = 0
    """Failed attempts of the work it rings so far: the next attempt is number ``retries + 1``."""
    claimed_until: datetime | None = None
    """Set while a worker holds the claim on this doorbell (the work runs); None otherwise."""

    def body_json(self) -> str:
        return json.dumps(dict(self.body), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What is kept of a failed attempt."""

    error_type: str
    message: str
    traceback: str
    occurred_at: datetime

    def __post_init__(self) -> None:
        # Whatever an exception carried, every store can keep it (see ``text``).
        object.__setattr__(self, "error_type", storable_text(self.error_type, limit=MAX_NAME_LENGTH))
        object.__setattr__(self, "message", storable_text(self.message, limit=MAX_ERROR_TEXT))
        object.__setattr__(self, "traceback", storable_text(self.traceback, limit=MAX_ERROR_TEXT))


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``RecordStore.claim`` found: the run, its doorbell, and whether the caller now holds it."""

    record: Record | None
    """The run, or None for an unknown run id."""
    doorbell: OutboxMessage | None
    """The doorbell row as claimed (or as found, when not claimed); None when there is no such row."""
    claimed: bool
    """The caller holds the doorbell until the claim's expiry: nobody else runs its work meanwhile."""
    abandoned: bool
    """The previous holder never let go: its attempt ended without recording an outcome."""
    failures: int
    """Failed attempts counted so far: at the run's status for step doorbells, of the hook for hook doorbells."""


@dataclass(frozen=True, slots=True)
class StepErrors:
    """The error counter of one run at one status."""

    run_id: str
    status: int
    count: int
    last_error: ErrorInfo


@dataclass(frozen=True, slots=True)
class HookErrors:
    """The failures of one hook execution (one hook, one run-state change of one run)."""

    message_id: str
    run_id: str
    hook: str
    count: int
    last_error: ErrorInfo
