"""Waiting for a run to reach a status: ``await_status`` (and the looks ``await_status_async`` makes).

A run is seen at a status once any version of it in its history was there,
so a status the run passed through between two looks is not missed (the
original, luno/workflow, misses it).
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Generic, TypeVar

from .errors import AwaitTimeout, ConfigurationError, RecordNotFound, WorkflowError
from .run import Run

if TYPE_CHECKING:
    from .definition import Definition
    from .ports import RecordStore
    from .record import Record
    from .typed import Typed

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

AWAIT_MIN_POLL = 0.01
AWAIT_MAX_POLL = 0.25


class RunFinished(WorkflowError):
    """the run finished without reaching the awaited status"""


class AwaitCalls(Generic[T, S]):
    """``await_status`` of ``Workflow``."""

    if TYPE_CHECKING:  # provided by Workflow
        definition: Definition[T, S]
        store: RecordStore
        typed: Typed[T, S]

        @property
        def name(self) -> str: ...

        def _own(self, record: Record) -> Record: ...

    def await_status(self, foreign_id: str, run_id: str, status: S, *, timeout: float | None = None) -> Run[T, S]:
        """Wait until the run is at, or has passed through, ``status``.

        Returns the run as it was when it reached ``status``. Raises
        ``AwaitTimeout`` after ``timeout`` seconds, ``RecordNotFound`` for an
        unknown run and ``RunFinished`` if the run ended without reaching it.
        ``timeout`` is checked between looks at the database: a look that
        hangs (a lock, a server that does not answer) holds the call until the
        database or its driver gives up; ``await_status_async`` cuts it short.
        """
        deadline = self._await_deadline(run_id, status, timeout)
        poll = AWAIT_MIN_POLL
        while True:
            found, sleep = self._await_poll(foreign_id, run_id, status, timeout, deadline, poll)
            if found is not None:
                return found
            time.sleep(sleep)
            poll = min(poll * 1.5, AWAIT_MAX_POLL)

    def _await_deadline(self, run_id: str, status: S, timeout: float | None) -> float | None:
        if int(status) not in self.definition.graph:
            raise ConfigurationError(f"status {status!r} is not part of the graph", workflow=self.name, run_id=run_id)
        return None if timeout is None else time.monotonic() + timeout

    def _await_poll(
        self, foreign_id: str, run_id: str, status: S, timeout: float | None, deadline: float | None, poll: float
    ) -> tuple[Run[T, S] | None, float]:
        """One look for ``await_status``: (the run, 0) once at ``status``, else (None, seconds to wait)."""
        record = self._own(self.store.lookup(run_id))
        if record.foreign_id != foreign_id:
            raise RecordNotFound(
                f"run belongs to foreign id {record.foreign_id!r}",
                workflow=self.name,
                run_id=run_id,
                foreign_id=foreign_id,
            )
        for entry in self.store.history(run_id):
            if entry.status == int(status):
                return self.typed.run(record, entry), 0.0
        if record.run_state.finished:
            raise RunFinished(
                f"the run finished ({record.run_state.name}) at "
                f"{self.definition.status_name(record.status)} without reaching {status.name}",
                workflow=self.name,
                foreign_id=foreign_id,
                run_id=run_id,
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise AwaitTimeout(
                f"run did not reach {status.name} within {timeout}s "
                f"(it is at {self.definition.status_name(record.status)}, {record.run_state.name})",
                workflow=self.name,
                foreign_id=foreign_id,
                run_id=run_id,
            )
        return None, poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0.0))
