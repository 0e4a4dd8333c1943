"""Records as users see them: the workflow's status enum and the object decoded.

A ``Record`` keeps its status as an int and its object as JSON bytes; steps,
hooks and callers get ``TypedRecord`` and ``Run`` instead. A record can also be
seen as it was at one stored version (a history row), as hooks and
``await_status`` need it.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

from .codec import ObjectCodec
from .definition import Definition
from .record import HistoryEntry, Meta, Record, TypedRecord
from .run import Run
from .run_state import RunState

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)
R = TypeVar("R", bound=TypedRecord[Any, Any])


class Typed(Generic[T, S]):
    """Turns stored records of one workflow into typed ones."""

    def __init__(self, definition: Definition[T, S], codec: ObjectCodec[T]) -> None:
        self.definition = definition
        self.codec = codec

    def record(self, record: Record, entry: HistoryEntry | None = None) -> TypedRecord[T, S]:
        """The run now, or (with ``entry``) as it was at that stored version.

        Raises ``SerializationError`` when the stored object no longer matches the type.
        """
        typed: TypedRecord[T, S] = self._build(TypedRecord, record, entry)
        return typed

    def run(self, record: Record, entry: HistoryEntry | None = None) -> Run[T, S]:
        """What a step, callback, timer or timeout works on.

        As in the original, a just-started run is seen as running, so
        ``run.cancel()`` works on the first step.
        """
        run: Run[T, S] = self._build(Run, record, entry)
        if entry is None and run.run_state == RunState.INITIATED:
            run.run_state = RunState.RUNNING
        return run

    def _build(self, cls: type[R], record: Record, entry: HistoryEntry | None) -> R:
        definition = self.definition
        if entry is None:
            return cls(
                workflow_name=record.workflow_name,
                foreign_id=record.foreign_id,
                run_id=record.run_id,
                run_state=record.run_state,
                status=definition.status(record.status),
                object=self.codec.decode(record.object, run_id=record.run_id),
                created_at=record.created_at,
                updated_at=record.updated_at,
                meta=record.meta,
            )
        return cls(
            workflow_name=record.workflow_name,
            foreign_id=record.foreign_id,
            run_id=record.run_id,
            run_state=entry.run_state,
            status=definition.status(entry.status),
            object=self.codec.decode(entry.object, run_id=record.run_id),
            created_at=record.created_at,
            updated_at=entry.created_at,
            meta=Meta(
                version=entry.version,
                run_state_reason=entry.reason,
                status_description=definition.status_name(entry.status),
                trace_origin=record.meta.trace_origin,
            ),
        )
