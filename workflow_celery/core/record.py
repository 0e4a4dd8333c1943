"""Records: a run as stored (``Record``) and as users see it (``TypedRecord``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from .run_state import RunState

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)


@dataclass(frozen=True, slots=True)
class Meta:
    """Bookkeeping stored with every record."""

    version: int
    """Incremented by every write; messages carry it so stale ones are dropped."""
    run_state_reason: str = ""
    """Why the run was last paused, cancelled or deleted (empty after resume)."""
    status_description: str = ""
    """Name of the status at the last write."""
    trace_origin: str = ""
    """Where ``trigger`` was called from (file:line of the caller)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A run as the store keeps it: the object is JSON bytes, the status an int."""

    workflow_name: str
    foreign_id: str
    run_id: str
    run_state: RunState
    status: int
    object: bytes
    created_at: datetime
    updated_at: datetime
    meta: Meta


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One stored version of a run: every write of a record appends one."""

    run_id: str
    version: int
    status: int
    run_state: RunState
    object: bytes
    reason: str
    created_at: datetime


@dataclass(slots=True)
class TypedRecord(Generic[T, S]):
    """A run with its status as the workflow's enum and its object decoded."""

    workflow_name: str
    foreign_id: str
    run_id: str
    run_state: RunState
    status: S
    object: T
    created_at: datetime
    updated_at: datetime
    meta: Meta
