"""The background work every worker process does: schedules, the outbox relay, the reconciler and lag.

All are safe to run in every worker at once: claiming doorbells takes row
locks (``SKIP LOCKED``), re-inserting a doorbell is idempotent (its id is
the run id and version), and a due schedule is leased to one worker and its
slot's run id is the same in all of them, so running them everywhere only
adds redundancy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..core.errors import SchemaMissing
from ..core.lag import LagWatch
from ..core.workflow import Workflow

log = logging.getLogger(__name__)

REPEAT_COMPLAINT_SECONDS = 60.0
"""A failure that persists is logged again this often, not at every round."""
MAX_BACKOFF_SECONDS = 30.0


class Complaints:
    """One log line per failure, not one per round: the first time, when it changes, then once a minute.

    A relay that cannot reach its database would otherwise write a traceback every
    second; the traceback is at DEBUG level, the line says what failed and why.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, float, int]] = {}

    def failed(self, what: str, exc: Exception) -> None:
        text = str(exc) if isinstance(exc, SchemaMissing) else f"{type(exc).__name__}: {exc}"
        text = " ".join(text.split())
        now = time.monotonic()
        previous, logged_at, count = self._last.get(what, ("", 0.0, 0))
        if text != previous or now - logged_at >= REPEAT_COMPLAINT_SECONDS:
            again = f" (failed {count + 1} times in a row)" if text == previous else ""
            level = logging.ERROR if isinstance(exc, SchemaMissing) else logging.WARNING
            log.log(level, "%s failed%s: %s", what, again, text)
            log.debug("%s failed", what, exc_info=exc)
            logged_at = now
        self._last[what] = (text, logged_at, count + 1)

    def succeeded(self, what: str) -> None:
        if self._last.pop(what, None) is not None:
            log.warning("%s works again", what)

    @property
    def failing(self) -> bool:
        return bool(self._last)


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
        self._complaints = Complaints()
        self._lag = LagWatch()
        self._failed_rounds = 0

    def fire_schedules(self) -> int:
        """One round of the schedules: fire the slots that are due (in a thread of their own in workers)."""
        done = 0
        for wf in self.workflows:
            what = f"schedules of workflow {wf.name}"
            try:
                done += wf.fire_schedules_once()
            except BaseException as exc:  # nothing a filter raises may end the thread (SystemExit included)
                self._complaints.failed(what, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                continue
            self._complaints.succeeded(what)
        return done

    def tick(self) -> int:
        """One round: publish due doorbells, and now and then look for stranded runs and measure the lag."""
        done = 0
        for wf in self._relays:
            what = f"outbox relay of {wf.store!r}"
            try:
                sent = wf.relay_once()
            except Exception as exc:
                self._complaints.failed(what, exc)
                continue
            self._complaints.succeeded(what)
            if sent:
                log.info("outbox relay published %d due message(s)", sent)
            done += sent
        if time.monotonic() - self._last_reconcile >= self.reconcile_every:
            self._last_reconcile = time.monotonic()
            for wf in self.workflows:
                what = f"reconciler of workflow {wf.name}"
                try:
                    done += wf.reconcile_once()
                    self._lag.check(wf, wf.clock.now())
                except Exception as exc:
                    self._complaints.failed(what, exc)
                    continue
                self._complaints.succeeded(what)
        return done

    def next_wait(self) -> float:
        """Seconds until the next round: the relay interval, doubling up to 30 s while something fails."""
        self._failed_rounds = self._failed_rounds + 1 if self._complaints.failing else 0
        return float(min(self.interval * 2 ** min(self._failed_rounds, 16), max(self.interval, MAX_BACKOFF_SECONDS)))

    def run(self, stop: threading.Event) -> None:
        wait = self.interval
        while not stop.wait(wait):
            self.tick()
            wait = self.next_wait()

    def run_schedules(self, stop: threading.Event) -> None:
        """Fire schedules every relay interval: apart from the relay, so a slow filter never holds it up."""
        while not stop.wait(self.interval):
            self.fire_schedules()

    def start_thread(self, name: str) -> tuple[threading.Thread, threading.Event]:
        """Start the relay's thread (returned) and the schedules' thread (``{name}-schedules``); one stop for both."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name=name, daemon=True)
        thread.start()
        schedules = threading.Thread(target=self.run_schedules, args=(stop,), name=f"{name}-schedules", daemon=True)
        schedules.start()
        return thread, stop
