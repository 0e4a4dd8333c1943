"""The background work every worker process does: the outbox relay and the reconciler.

Both are safe to run in every worker at once: claiming doorbells takes row
locks (``SKIP LOCKED``) and re-inserting a doorbell is idempotent (its id is
the run id and version), so running them everywhere only adds redundancy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..core.workflow import Workflow

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, workflows: Sequence[Workflow[Any, Any]]) -> None:
        self.workflows = list(workflows)
        by_store: dict[int, Workflow[Any, Any]] = {}
        for wf in self.workflows:
            by_store.setdefault(id(wf.store), wf)
        self._relays = list(by_store.values())
        self.interval = min((wf.options.relay_interval.total_seconds() for wf in self.workflows), default=1.0)
        self.reconcile_every = min((wf.options.redeliver_after.total_seconds() for wf in self.workflows), default=30.0)
        self._last_reconcile = time.monotonic()

    def tick(self) -> int:
        """One round: publish due doorbells, and now and then look for stranded runs."""
        done = 0
        for wf in self._relays:
            try:
                sent = wf.relay_once()
                if sent:
                    log.info("outbox relay published %d due message(s)", sent)
                done += sent
            except Exception:
                log.warning("outbox relay failed; trying again in %.1fs", self.interval, exc_info=True)
        if time.monotonic() - self._last_reconcile >= self.reconcile_every:
            self._last_reconcile = time.monotonic()
            for wf in self.workflows:
                try:
                    done += wf.reconcile_once()
                except Exception:
                    log.warning("reconciler failed for workflow %s", wf.name, exc_info=True)
        return done

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.tick()

    def start_thread(self, name: str) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name=name, daemon=True)
        thread.start()
        return thread, stop
