"""An in-process broker and worker: no server, same code path as a Celery worker.

Messages go into an in-memory queue; worker threads (or ``drain()`` in the
calling thread) hand them to exactly the function a Celery task calls,
``Workflow.handle_step``. Used by the unit tests, the testing helpers and the
embedded demo. It is not Celery's eager mode: doorbells are published after
commit and answered later, so ordering, duplicates and stale messages behave
as they do with a real broker.

A failed attempt whose retry Celery would send with a countdown is held by
the broker until the workflow's clock reaches its time (``drain()`` delivers
it then), as a Celery worker holds an ETA message; far retries wait in the
store for ``relay()``, as they do on Celery.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.answer import Answer, HookOutcome, Outcome
from ..core.definition import Definition
from ..core.doorbell import with_attempt
from ..core.errors import ConfigurationError
from ..core.options import WorkflowOptions
from ..core.ports import Clock, OutboxMessage, RecordStore
from ..core.workflow import Workflow
from ..runtime.claims import ClaimKeeper
from ..runtime.connectors import ConnectorRunner
from ..runtime.maintenance import Maintenance

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    queue: str
    task: str
    body: dict[str, Any]


class InProcessBroker:
    """Deliver workflow messages inside this process.

    ``broker.drain()`` answers every pending message in the calling thread
    (deterministic, for unit tests); ``broker.start(workers=n)`` runs worker
    threads and a relay thread until ``broker.stop()``.
    """

    def __init__(self, *, drop: Callable[[Delivery], bool] | None = None) -> None:
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        self._handlers: dict[str, tuple[Workflow[Any, Any], Callable[[Any], Answer]]] = {}
        self._threads: list[threading.Thread] = []
        self._scheduled: list[tuple[datetime, Clock, Delivery]] = []
        self._running: dict[int, Delivery] = {}
        self._claims: ClaimKeeper | None = None
        self._connectors: ConnectorRunner | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drop = drop
        self.outcomes: list[tuple[str, Outcome | HookOutcome]] = []
        self._outcomes_lock = threading.Lock()
        self.published = 0

    # -- Dispatcher --------------------------------------------------------

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        for m in messages:
            delivery = Delivery(queue=m.queue, task=m.task, body=with_attempt(m.body, m.retries + 1))
            if self._drop is not None and self._drop(delivery):
                continue
            self.published += 1
            self._queue.put(delivery)

    def send(self, queue_name: str, body: Any) -> None:
        """Put a raw message on a queue (tests use it to replay or forge messages)."""
        self._queue.put(Delivery(queue=queue_name, task=queue_name, body=body))

    # -- wiring ------------------------------------------------------------

    def attach(
        self, definition: Definition[Any, Any], store: RecordStore, clock: Clock, options: WorkflowOptions
    ) -> Workflow[Any, Any]:
        if definition.name in self._workflows:
            raise ConfigurationError("a workflow with this name is already attached", workflow=definition.name)
        wf: Workflow[Any, Any] = Workflow(definition, store, self, clock, options)
        self._workflows[definition.name] = wf
        for queue_name, handler in wf.routes().items():
            self._handlers[queue_name] = (wf, handler)
        return wf

    @property
    def workflows(self) -> dict[str, Workflow[Any, Any]]:
        return dict(self._workflows)

    # -- consuming ---------------------------------------------------------

    def _deliver(self, delivery: Delivery) -> None:
        found = self._handlers.get(delivery.queue)
        if found is None:
            log.error("dropping message for unknown queue %s", delivery.queue)
            return
        wf, handler = found
        key = id(delivery)
        with self._lock:
            self._running[key] = delivery
        try:
            answer = handler(delivery.body)
        except Exception:
            # Like a Celery task failing: the message is gone, the doorbell row is not.
            log.exception("task %s failed", delivery.task)
            return
        finally:
            with self._lock:
                self._running.pop(key, None)
        with self._outcomes_lock:
            self.outcomes.append((delivery.queue, answer.outcome))
        if answer.retry is not None and answer.retry.countdown is not None and isinstance(delivery.body, dict):
            again = Delivery(delivery.queue, delivery.task, with_attempt(delivery.body, answer.attempt + 1))
            with self._lock:
                self._scheduled.append((answer.retry.retry_at, wf.clock, again))

    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def scheduled(self) -> list[tuple[datetime, str]]:
        """Retries held until their time, as ``(due, queue)``: what ``celery inspect scheduled`` lists."""
        with self._lock:
            return sorted((due, d.queue) for due, _, d in self._scheduled)

    def _release_due(self) -> int:
        with self._lock:
            due = [item for item in self._scheduled if item[1].now() >= item[0]]
            self._scheduled = [item for item in self._scheduled if item not in due]
        for _, _, delivery in due:
            self._queue.put(delivery)
        return len(due)

    def drain(self, *, max_messages: int = 100_000) -> int:
        """Answer queued messages (and retries whose time has come) in this thread until none is left."""
        handled = 0
        while handled < max_messages:
            self._release_due()
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                return handled
            self._deliver(delivery)
            handled += 1
        raise RuntimeError(f"drain stopped after {max_messages} messages: a step may loop forever")

    def relay(self) -> int:
        """Fire every due schedule slot, then ring every due doorbell once (each store once); return how many."""
        seen: set[int] = set()
        total = sum(wf.fire_schedules_once() for wf in self._workflows.values())
        for wf in self._workflows.values():
            if id(wf.store) in seen:
                continue
            seen.add(id(wf.store))
            total += wf.relay_once()
        return total

    def run_until_idle(self, *, timeout: float = 10.0) -> None:
        """drain + relay until nothing is queued or due (for retries on a fake or real clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            moved = self.drain() + self.relay()
            if moved == 0:
                return
        raise TimeoutError(f"still busy after {timeout}s")

    def start(self, *, workers: int = 2) -> InProcessBroker:
        self._stop.clear()
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"inprocess-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        maintenance = Maintenance(list(self._workflows.values()))
        for target, name in ((maintenance.run, "inprocess-relay"), (maintenance.run_schedules, "inprocess-schedules")):
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._claims = ClaimKeeper(list(self._workflows.values()), self._running_work).start("inprocess-claims")
        self._connectors = ConnectorRunner(list(self._workflows.values())).start()
        return self

    def _running_work(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(d.queue, d.body) for d in self._running.values()]

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._connectors is not None:
            self._connectors.stop(timeout)
            self._connectors = None
        if self._claims is not None:
            self._claims.stop(timeout)
            self._claims = None
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def __enter__(self) -> InProcessBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        while not self._stop.is_set():
            self._release_due()
            try:
                delivery = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self._deliver(delivery)
