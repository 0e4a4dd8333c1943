"""Consuming connectors: one thread per connector of each workflow, started by whoever owns the process.

A Celery worker's bootstep starts a ``ConnectorRunner`` for the workflows
whose queues the worker consumes; the in-process broker starts one too.
Each thread opens the connector's source as one consumer of its group,
hands each event to the connector's function, acknowledges it once the
function returned, retries a failing event with the workflow's backoff, and
parks it as a dead letter after the source's ``max_attempts``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from ..core.connectors import ConnectorSpec, ConnectorStream, Delivery, handling
from ..core.dead_letters import DeadLetter
from ..core.failures import backoff
from ..core.workflow import Workflow
from .maintenance import Complaints

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
_PARK_NAMESPACE = uuid.UUID("3f4b8c1e-2d7a-4e9b-a1c6-5e8f0d2b7a94")


def consumer_name() -> str:
    """This process as a consumer of a group: ``host-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def parked_queue(wf: Workflow[Any, Any], spec: ConnectorSpec) -> str:
    """Where a connector's parked events are listed among the dead letters: ``connector:{workflow}.{name}``."""
    return f"connector:{wf.name}.{spec.name}"


class ConnectorRunner:
    """The consumer threads of the connectors of ``workflows`` in this process."""

    def __init__(self, workflows: Sequence[Workflow[Any, Any]], consumer: str | None = None) -> None:
        self.consumer = consumer or consumer_name()
        self._work = [(wf, spec) for wf in workflows for spec in wf.definition.connectors.values()]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._complaints = Complaints()

    def start(self) -> ConnectorRunner:
        self._stop.clear()
        for wf, spec in self._work:
            thread = threading.Thread(
                target=self._consume, args=(wf, spec), name=f"connector-{wf.name}-{spec.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop consuming; an event being handled is finished, one waiting for a retry is left unacknowledged."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _consume(self, wf: Workflow[Any, Any], spec: ConnectorSpec) -> None:
        what = f"connector {spec.name} of workflow {wf.name}"
        stream: ConnectorStream | None = None
        keeper: Keeper | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if stream is None or keeper is None:
                    stream = spec.source.open(self.consumer, f"{wf.name}.{spec.name}")
                    keeper = Keeper(stream, what)
                    log.info("%s consumes %s as %s", what, spec.source.name, self.consumer)
                batch = stream.fetch(FETCH_TIMEOUT_S)
                keeper.hold(batch)
                for delivery in batch:
                    if self._stop.is_set():
                        break  # not acknowledged: handed out again after the source's claim time
                    if keeper.lost(delivery):
                        continue
                    self.handle(wf, spec, stream, delivery)
                    keeper.release(delivery)
                keeper.hold(())
            except BaseException as exc:  # nothing may end the thread silently (a SystemExit from fn included)
                if not isinstance(exc, Exception):
                    exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                self._complaints.failed(what, exc)
                failures += 1
                _close(stream, keeper)
                stream, keeper = None, None
                self._stop.wait(backoff(wf.options.err_backoff, wf.options.max_backoff, failures).total_seconds())
                continue
            failures = 0
            self._complaints.succeeded(what)
        _close(stream, keeper)

    def handle(self, wf: Workflow[Any, Any], spec: ConnectorSpec, stream: ConnectorStream, delivery: Delivery) -> bool:
        """Hand one delivery to the connector's function until it succeeds or is parked; True once acknowledged."""
        event = delivery.event
        if event is None:
            log.warning("connector %s of workflow %s: parked, not an event: %s", spec.name, wf.name, delivery.reason)
            self._park(wf, spec, delivery, f"not an event: {delivery.reason}")
            stream.ack(delivery)
            return True
        if delivery.delivered > spec.source.max_attempts:
            # Each consumer it was handed to stopped before it was done with it: its function may end the process.
            reason = (
                f"handed out {delivery.delivered} times and never acknowledged: the consumers holding it "
                "stopped (does the function end the process?)"
            )
            log.error("connector %s of workflow %s: event %s %s; parked", spec.name, wf.name, event.id, reason)
            self._park(wf, spec, delivery, reason)
            stream.ack(delivery)
            return True
        attempt = 0
        while True:
            attempt += 1
            if not stream.touch(delivery):
                log.warning(
                    "connector %s of workflow %s: event %s was taken over by another consumer; left to it",
                    spec.name, wf.name, event.id,
                )  # fmt: skip
                return False
            try:
                # Named with its workflow: two workflows' connectors of one name are two connectors.
                with handling(f"{wf.name}.{spec.name}", event):
                    spec.fn(wf, event)
            # An fn that raises SystemExit or KeyboardInterrupt failed on this event; the thread goes on.
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt >= spec.source.max_attempts:
                    log.error(
                        "connector %s of workflow %s: event %s failed %d times, parked as a dead letter: %s",
                        spec.name, wf.name, event.id, attempt, error, exc_info=exc,
                    )  # fmt: skip
                    detail = "".join(traceback.format_exception(exc))[-4000:]
                    self._park(wf, spec, delivery, f"failed {attempt} times: {error}", detail)
                    stream.ack(delivery)
                    return True
                delay = backoff(wf.options.err_backoff, wf.options.max_backoff, attempt)
                log.warning(
                    "connector %s of workflow %s: event %s failed (attempt %d of %d), again in %.1fs: %s",
                    spec.name, wf.name, event.id, attempt, spec.source.max_attempts, delay.total_seconds(), error,
                )  # fmt: skip
                if self._stop.wait(delay.total_seconds()):
                    return False
                continue
            stream.ack(delivery)
            return True

    def _park(
        self, wf: Workflow[Any, Any], spec: ConnectorSpec, delivery: Delivery, reason: str, detail: str = ""
    ) -> None:
        """Keep the event as a dead letter: the reason in one line, the traceback among its headers."""
        event = delivery.event
        key = f"{wf.name}\n{spec.name}\n{event.id if event else delivery.key or delivery.raw.hex()}"
        headers = {} if event is None else {"id": event.id, "foreign_id": event.foreign_id, "type": event.type}
        if detail:
            headers["traceback"] = detail
        wf.store.add_dead_letter(
            DeadLetter(
                id=str(uuid.uuid5(_PARK_NAMESPACE, key)),
                queue=parked_queue(wf, spec),
                body=delivery.raw,
                reason=reason,
                received_at=wf.clock.now(),
                headers=json.dumps({**(dict(event.headers) if event else {}), **headers}) if headers else "",
                worker=self.consumer,
            )
        )


class Keeper:
    """Touches the events this consumer holds, every ``stream.keep_every`` seconds, in a thread of its own.

    One per open stream. It holds the current batch: the event being handled
    (``fn`` may run longer than the source's claim time) and the ones waiting
    behind it, since an event left untouched would be taken over by another
    consumer and handled twice. An event another consumer took over anyway is
    ``lost``: skip it. A source that keeps held events by itself
    (``keep_every`` None) gets no thread.
    """

    def __init__(self, stream: ConnectorStream, what: str) -> None:
        self._stream = stream
        self._what = what
        # By identity: a Delivery need not be hashable, and each is referenced here while it is held.
        self._held: dict[int, Delivery] = {}
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if stream.keep_every is not None:
            self._thread = threading.Thread(
                target=self._keep, args=(stream.keep_every,), name=f"{what} keeper", daemon=True
            )
            self._thread.start()

    def hold(self, batch: Sequence[Delivery]) -> None:
        """From now on, keep these (and no others)."""
        with self._lock:
            self._held = {id(d): d for d in batch}
            self._lost.clear()

    def lost(self, delivery: Delivery) -> bool:
        with self._lock:
            return id(delivery) in self._lost

    def release(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.pop(id(delivery), None)

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _keep(self, every: float) -> None:
        while not self._done.wait(every):
            with self._lock:
                held = list(self._held.values())
            for delivery in held:
                try:
                    kept = self._stream.touch(delivery)
                except Exception:
                    log.warning("%s: could not keep a held event", self._what, exc_info=True)
                    continue
                if not kept:
                    held_id = delivery.event.id if delivery.event is not None else delivery.reason
                    log.warning("%s: event %s was taken over by another consumer; left to it", self._what, held_id)
                    with self._lock:
                        if self._held.pop(id(delivery), None) is not None:
                            self._lost.add(id(delivery))


def _close(stream: ConnectorStream | None, keeper: Keeper | None) -> None:
    if keeper is not None:
        keeper.close()  # first: it touches the stream
    if stream is None:
        return
    try:
        stream.close()
    except Exception:
        log.debug("closing a connector stream failed", exc_info=True)
