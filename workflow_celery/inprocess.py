"""An in-process broker and worker: no server, same code path as a Celery worker.

Messages go into an in-memory queue; worker threads (or ``drain()`` in the
calling thread) hand them to exactly the function a Celery task calls,
``Workflow.handle_step``. Used by the unit tests, the testing helpers and the
embedded demo. It is not Celery's eager mode: doorbells are published after
commit and answered later, so ordering, duplicates and stale messages behave
as they do with a real broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .core.definition import Definition
from .core.engine import Outcome
from .core.errors import ConfigurationError
from .core.hooks import HookOutcome
from .core.maintenance import Maintenance
from .core.options import WorkflowOptions
from .core.ports import Clock, OutboxMessage, RecordStore
from .core.workflow import Workflow

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
        self._handlers: dict[str, Callable[[Any], Outcome | HookOutcome]] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._drop = drop
        self.outcomes: list[tuple[str, Outcome | HookOutcome]] = []
        self._outcomes_lock = threading.Lock()
        self.published = 0

    # -- Dispatcher --------------------------------------------------------

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        for m in messages:
            delivery = Delivery(queue=m.queue, task=m.task, body=dict(m.body))
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
        for status, queue_name in definition.step_queues().items():
            self._handlers[queue_name] = _step_handler(wf, status)
        self._handlers[definition.delete_queue()] = wf.handle_delete
        for event, fns in definition.hooks.items():
            if fns:
                self._handlers[definition.hook_queue_for(event)] = _hook_handler(wf, event)
        return wf

    @property
    def workflows(self) -> dict[str, Workflow[Any, Any]]:
        return dict(self._workflows)

    # -- consuming ---------------------------------------------------------

    def _deliver(self, delivery: Delivery) -> None:
        handler = self._handlers.get(delivery.queue)
        if handler is None:
            log.error("dropping message for unknown queue %s", delivery.queue)
            return
        try:
            outcome = handler(delivery.body)
        except Exception:
            # Like a Celery task failing: the message is gone, the doorbell row is not.
            log.exception("task %s failed", delivery.task)
            return
        with self._outcomes_lock:
            self.outcomes.append((delivery.queue, outcome))

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self, *, max_messages: int = 100_000) -> int:
        """Answer queued messages in this thread until none is left; return how many."""
        handled = 0
        while handled < max_messages:
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                return handled
            self._deliver(delivery)
            handled += 1
        raise RuntimeError(f"drain stopped after {max_messages} messages: a step may loop forever")

    def relay(self) -> int:
        """Ring every due doorbell once (each store once); return how many."""
        seen: set[int] = set()
        total = 0
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
        relay = threading.Thread(target=self._relay_loop, name="inprocess-relay", daemon=True)
        relay.start()
        self._threads.append(relay)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def __enter__(self) -> InProcessBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                delivery = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self._deliver(delivery)

    def _relay_loop(self) -> None:
        Maintenance(list(self._workflows.values())).run(self._stop)


def _step_handler(wf: Workflow[Any, Any], status: int) -> Callable[[Any], Outcome]:
    def handle(body: Any) -> Outcome:
        return wf.handle_step(status, body)

    return handle


def _hook_handler(wf: Workflow[Any, Any], event: str) -> Callable[[Any], HookOutcome]:
    def handle(body: Any) -> HookOutcome:
        return wf.handle_hook(event, body)

    return handle
