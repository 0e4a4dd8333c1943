"""Leases: a step that runs longer than ``redeliver_after`` keeps its doorbell from ringing again.

Without this, the relay would take a long step's doorbell for a lost message
and publish it again, and a second worker would run the same step while the
first is still at it. While a step runs, a thread of its process pushes the
doorbell's due time forward every ``redeliver_after / 3``; if the process
dies, the pushes stop and the doorbell rings again once the lease runs out.
Short steps cost nothing: nothing is written unless a step outlives a third of
``redeliver_after`` (counted from when its doorbell was written).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ports import Clock, RecordStore

log = logging.getLogger(__name__)

MAX_TICK_SECONDS = 0.5
MIN_TICK_SECONDS = 0.02


@dataclass
class _Held:
    store: RecordStore
    clock: Clock
    redeliver_after: timedelta
    renewed_at: float
    slot_holder: str | None


class Leases:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @contextmanager
    def hold(
        self,
        store: RecordStore,
        clock: Clock,
        message_id: str,
        redeliver_after: timedelta,
        *,
        rung_at: datetime,
        slot_holder: str | None = None,
    ) -> Iterator[None]:
        """Keep ``message_id`` (and the step slot of ``slot_holder``) leased while the block runs.

        ``rung_at`` is when the doorbell was written: a message that waited long in
        the queue has used up part of its lease already, so it is renewed sooner.
        """
        waited = max((clock.now() - rung_at).total_seconds(), 0.0)
        with self._lock:
            self._ensure_thread()
            self._held[message_id] = _Held(store, clock, redeliver_after, time.monotonic() - waited, slot_holder)
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(message_id, None)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked pool process: the parent's thread did not come along
            self._pid, self._thread = os.getpid(), None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="workflow-celery-leases", daemon=True)
            self._thread.start()

    def renew_due(self) -> int:
        """Extend every lease held for a third of its length or more; return how many were extended."""
        now = time.monotonic()
        with self._lock:
            due = [
                (mid, h) for mid, h in self._held.items() if now - h.renewed_at >= h.redeliver_after.total_seconds() / 3
            ]
            for _, h in due:
                h.renewed_at = now
        for mid, h in due:
            try:
                until = h.clock.now() + h.redeliver_after
                h.store.postpone_outbox([mid], until)
                if h.slot_holder is not None:
                    h.store.extend_slot(h.slot_holder, until)
                log.debug("extended the lease of %s by %s", mid, h.redeliver_after)
            except Exception:
                log.warning("could not extend the lease of %s", mid, exc_info=True)
        return len(due)

    def _run(self) -> None:
        while True:
            with self._lock:
                shortest = min((h.redeliver_after.total_seconds() for h in self._held.values()), default=3.0)
            # Tick often enough to renew at a third of the shortest lease, never busier than needed.
            time.sleep(min(max(shortest / 6, MIN_TICK_SECONDS), MAX_TICK_SECONDS))
            self.renew_due()


LEASES = Leases()
