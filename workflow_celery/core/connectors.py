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
    """An event as a source handed it out: ``event`` is None when the raw entry is not an event (``reason``)."""

    event: ConnectorEvent | None
    raw: bytes
    token: Any
    reason: str = ""


class ConnectorStream(Protocol):
    """One consumer's view of a source (a member of its consumer group)."""

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        """Events for this consumer, waiting up to ``timeout`` seconds for the first; may return none.

        Events another consumer took and never acknowledged (it died) are
        handed out again after the source's claim time.
        """
        ...

    def ack(self, delivery: Delivery) -> None:
        """The event is done: no consumer gets it again."""
        ...

    def touch(self, delivery: Delivery) -> None:
        """The event is still being handled (retried): keep other consumers from taking it over."""
        ...

    def close(self) -> None: ...


class ConnectorSource(Protocol):
    """Where a connector's events come from; ``open`` is called once per consumer thread."""

    name: str
    max_attempts: int

    def open(self, consumer: str) -> ConnectorStream: ...


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
