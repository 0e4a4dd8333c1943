"""Records: a run as stored (``Record``) and as users see it (``TypedRecord``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from .run_state import RunState
from .text import MAX_REASON_LENGTH, storable_text

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

    def __post_init__(self) -> None:
        # Reasons come from operators and steps, the origin from the file system: keep them storable.
        object.__setattr__(self, "run_state_reason", storable_text(self.run_state_reason, limit=MAX_REASON_LENGTH))
        object.__setattr__(self, "trace_origin", storable_text(self.trace_origin, limit=MAX_REASON_LENGTH))


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

    def history_entry(self) -> HistoryEntry:
        """The history row that writing this version of the run appends."""
        return HistoryEntry(
            run_id=self.run_id,
            version=self.meta.version,
            status=self.status,
            run_state=self.run_state,
            object=self.object,
            reason=self.meta.run_state_reason,
            created_at=self.updated_at,
        )


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", storable_text(self.reason, limit=MAX_REASON_LENGTH))


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
