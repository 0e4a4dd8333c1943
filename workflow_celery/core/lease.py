"""Leases: a step that runs longer than ``redeliver_after`` keeps its doorbell from ringing again.

Without this, the relay would take a long step's doorbell for a lost message
and publish it again, and a second worker would run the same step while the
first is still at it. While a step runs, a thread of its process pushes the
doorbell's due time forward every ``redeliver_after / 2``; if the process
dies, the pushes stop and the doorbell rings again once the lease runs out.
Short steps cost nothing: nothing is written unless a step outlives half of
``redeliver_after``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from .ports import Clock, RecordStore

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5


@dataclass
class _Held:
    store: RecordStore
    clock: Clock
    redeliver_after: timedelta
    renewed_at: float


class Leases:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @contextmanager
    def hold(self, store: RecordStore, clock: Clock, message_id: str, redeliver_after: timedelta) -> Iterator[None]:
        with self._lock:
            self._ensure_thread()
            self._held[message_id] = _Held(store, clock, redeliver_after, time.monotonic())
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
        """Extend every lease held for at least half its length; return how many were extended."""
        now = time.monotonic()
        with self._lock:
            due = [
                (mid, h) for mid, h in self._held.items() if now - h.renewed_at >= h.redeliver_after.total_seconds() / 2
            ]
            for _, h in due:
                h.renewed_at = now
        for mid, h in due:
            try:
                h.store.postpone_outbox([mid], h.clock.now() + h.redeliver_after)
                log.debug("extended the lease of %s by %s", mid, h.redeliver_after)
            except Exception:
                log.warning("could not extend the lease of %s", mid, exc_info=True)
        return len(due)

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            self.renew_due()


LEASES = Leases()
