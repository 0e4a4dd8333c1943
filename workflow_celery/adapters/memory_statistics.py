"""``MemoryStore``'s queries over many runs: counts per status, the oldest waiting run, stranded runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from ..core.lag import Waiting
from ..core.ports import OutboxMessage
from ..core.record import Record
from ..core.run_state import RunState


class MemoryRunStatistics:
    """``WaitingRuns`` and ``stranded_runs`` over ``MemoryStore``'s records (which provides what is declared here)."""

    _lock: threading.RLock
    _records: dict[str, Record]
    _order: list[str]
    _outbox: dict[str, OutboxMessage]

    def runs_by_status(self, workflow_name: str) -> list[tuple[int, int, int]]:
        counts: dict[tuple[int, int], int] = {}
        with self._lock:
            for r in self._records.values():
                if r.workflow_name == workflow_name:
                    key = (r.status, int(r.run_state))
                    counts[key] = counts.get(key, 0) + 1
        return [(status, state, n) for (status, state), n in sorted(counts.items())]

    def waiting_runs(self, workflow_name: str, statuses: Sequence[int]) -> list[Waiting]:
        wanted = set(statuses)
        found: dict[int, Waiting] = {}
        with self._lock:
            for r in self._records.values():
                if r.workflow_name != workflow_name or r.status not in wanted:
                    continue
                if r.run_state not in (RunState.INITIATED, RunState.RUNNING):
                    continue
                old = found.get(r.status)
                oldest = r.updated_at if old is None else min(old.oldest, r.updated_at)
                found[r.status] = Waiting(r.status, (old.count if old else 0) + 1, oldest)
        return [found[s] for s in sorted(found)]

    def stranded_runs(
        self, workflow_name: str, statuses: Sequence[int], updated_before: datetime, limit: int
    ) -> list[Record]:
        with self._lock:
            rung = {m.run_id for m in self._outbox.values() if m.kind == "step"}
            found = [
                r
                for r in (self._records[i] for i in self._order)
                if r.workflow_name == workflow_name
                and r.run_state in (RunState.INITIATED, RunState.RUNNING)
                and r.status in statuses
                and r.updated_at < updated_before
                and r.run_id not in rung
            ]
            found.sort(key=lambda r: (r.created_at, r.run_id))
            return found[:limit]
