"""Connectors: events from outside (a Redis stream, a broker queue) handed to ``fn(wf, event)``.

A connector is a ``source`` (``ConnectorSource``), a function and a name,
added with ``Builder.add_connector``. Workers consume each connector's source
(``runtime.connectors``): an event is acknowledged only after ``fn`` returned;
a failing event is tried again with backoff and, after ``max_attempts``,
parked as a dead letter (``workflow-celery dead-letters list``).

Exactly one run per event: a run ``fn`` triggers for an event gets an id
derived from the connector and the event (``event_run_id``), so an event
delivered again (its consumer died after the trigger and before the
acknowledgement) finds its run and starts no other. The original
(luno/workflow) drops about a quarter of the events of a sharded connector;
here consumers share a source through its own consumer groups.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

_NAMESPACE = uuid.UUID("0b7c3a52-6a8e-4f0e-9d0b-4c1d5f3e8a27")

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class ConnectorEvent:
    """One event from a source: its id (unique in the source), the foreign id it is about, and its data."""

    id: str
    foreign_id: str
    type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    data: bytes = b""


@dataclass(frozen=True)
class Delivery:
    """An event as a source handed it out: ``event`` is None when the raw entry is not an event (``reason``).

    ``key`` tells a delivery that is not an event apart from others with the
    same ``raw`` bytes (two identical malformed messages are parked as two
    dead letters); empty when the raw bytes already do (a stream entry's id is
    among them).
    """

    event: ConnectorEvent | None
    raw: bytes
    token: Any
    reason: str = ""
    key: str = ""
    delivered: int = 1
    """How many times the source has handed it out, this time included, where it counts (a Redis group does)."""


class ConnectorStream(Protocol):
    """One consumer's view of a source (a member of its consumer group).

    ``keep_every`` (seconds) is how often the runner touches each event this
    consumer holds and has not acknowledged yet (the one being handled and
    the rest of its batch), so that no other consumer takes them over; None
    when the source keeps them with their consumer by itself (a broker queue
    does while the connection lives).
    """

    keep_every: float | None

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        """Events for this consumer, waiting up to ``timeout`` seconds for the first; may return none.

        Events another consumer took and never acknowledged (it died) are
        handed out again after the source's claim time.
        """
        ...

    def ack(self, delivery: Delivery) -> None:
        """The event is done: no consumer gets it again."""
        ...

    def touch(self, delivery: Delivery) -> bool:
        """The event is still held here: keep other consumers from taking it over.

        False when another consumer has taken it over already (this one was
        too slow to touch it): it is that consumer's now, and this one must
        neither handle nor acknowledge it.
        """
        ...

    def close(self) -> None: ...


class ConnectorSource(Protocol):
    """Where a connector's events come from; ``open`` is called once per consumer thread.

    ``consumer`` names this consumer among the source's consumers
    (``{host}-{pid}``); ``connector`` names the connector, ``{workflow}.{name}``,
    for a source that keeps a cursor per connector (a Redis consumer group).
    """

    name: str
    max_attempts: int

    def open(self, consumer: str, connector: str) -> ConnectorStream: ...


ConnectorFn = Callable[[Any, ConnectorEvent], Any]
"""``fn(wf, event)``: typically ``wf.trigger(event.foreign_id, ...)`` or ``wf.callback(...)``."""


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    source: ConnectorSource
    fn: ConnectorFn


@dataclass
class _EventScope:
    connector: str
    event_id: str
    triggered: int = 0


_scope: ContextVar[_EventScope | None] = ContextVar("workflow_celery_connector_event", default=None)


@contextmanager
def handling(connector: str, event: ConnectorEvent) -> Iterator[None]:
    """While ``fn`` handles ``event``: the runs it triggers get ids derived from the event."""
    token = _scope.set(_EventScope(connector, event.id))
    try:
        yield
    finally:
        _scope.reset(token)


def event_run_id(workflow_name: str, foreign_id: str) -> str | None:
    """The id of the run a connector's function triggers now, or None outside one.

    The n-th trigger made while handling an event gets the same id each
    time the event is handled: a second delivery cannot start a second run.
    """
    scope = _scope.get()
    if scope is None:
        return None
    scope.triggered += 1
    key = f"{scope.connector}\n{scope.event_id}\n{workflow_name}\n{foreign_id}\n{scope.triggered}"
    return str(uuid.uuid5(_NAMESPACE, key))
