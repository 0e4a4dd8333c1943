"""Keeping the claims of running work alive.

A worker claims a doorbell before running its work, until ``now +
redeliver_after``; nobody else runs that work while the claim lasts, and the
relay does not ring it. Work that lasts longer needs its claim renewed, from
somewhere the work itself cannot starve: a step stuck in C code that holds
the GIL stops every thread of its own process. In a prefork Celery worker the
renewing happens in the main process, for the tasks its pool processes are
running; if a pool process dies, its task leaves the running set, the renewals
stop, and the claim expires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from ..core.doorbell import message_id_of
from ..core.workflow import Workflow

log = logging.getLogger(__name__)

MIN_TICK_SECONDS = 0.02
MAX_TICK_SECONDS = 10.0

Running = Callable[[], Iterable[tuple[str, Any]]]
"""Returns ``(task or queue name, message body)`` for every piece of work running now."""


class ClaimKeeper:
    """Renews the claims of running work every third of the shortest ``redeliver_after``."""

    def __init__(self, workflows: Sequence[Workflow[Any, Any]], running: Running) -> None:
        self._running = running
        self._by_queue = {queue: wf for wf in workflows for queue in wf.queues()}
        shortest = min((wf.options.redeliver_after for wf in workflows), default=timedelta(seconds=30))
        self.interval = min(max(shortest.total_seconds() / 3, MIN_TICK_SECONDS), MAX_TICK_SECONDS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Renew the claim of every piece of work running now; return how many were renewed."""
        try:
            running = list(self._running())
        except RuntimeError:  # the running set changed while it was read: the next tick will see it
            return 0
        groups: dict[tuple[int, timedelta], tuple[Workflow[Any, Any], list[str]]] = {}
        for name, body in running:
            wf = self._by_queue.get(name)
            message_id = message_id_of(body)
            if wf is None or message_id is None:
                continue
            key = (id(wf.store), wf.options.redeliver_after)
            groups.setdefault(key, (wf, []))[1].append(message_id)
        renewed = 0
        for wf, ids in groups.values():
            try:
                wf.store.renew_claims(ids, wf.clock.now() + wf.options.redeliver_after)
                renewed += len(ids)
            except Exception:
                log.warning("could not renew the claims of %d running task(s)", len(ids), exc_info=True)
        return renewed

    def start(self, name: str = "workflow-celery-claims") -> ClaimKeeper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()
