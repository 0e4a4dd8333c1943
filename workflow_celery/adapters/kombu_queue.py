"""``KombuQueueSource``: a connector's events from a broker queue (RabbitMQ, or any kombu transport).

A message's body is a JSON object: ``foreign_id`` (required), ``id``,
``type``, ``headers`` (an object of strings), ``data`` (a string, kept as
UTF-8 bytes). Without ``id``, the message's ``message_id`` property is the
event's id, and without that a digest of the body. Several consumers share
the queue as a broker's consumers do; a message is acknowledged only after
the connector's function returned, so the broker hands a consumer's
unacknowledged messages to another when that consumer's connection drops.
Bodies are parsed as JSON whatever their content type: never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ..core.connectors import DEFAULT_MAX_ATTEMPTS, ConnectorEvent, Delivery
from ..core.errors import ConfigurationError


class KombuQueueSource:
    """Events from the queue ``queue`` of the broker at ``url`` (declared durable if missing)."""

    def __init__(self, url: str, queue: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if not queue:
            raise ConfigurationError("KombuQueueSource needs a queue name")
        if max_attempts < 1:
            raise ConfigurationError("KombuQueueSource: max_attempts must be positive")
        self.url = url
        self.queue = queue
        self.max_attempts = max_attempts
        self.name = f"queue:{queue}"

    def __repr__(self) -> str:
        return f"KombuQueueSource(queue={self.queue!r})"

    def open(self, consumer: str) -> KombuQueueConsumer:
        return KombuQueueConsumer(self)


class KombuQueueConsumer:
    """One consumer of the queue, on a connection of its own."""

    def __init__(self, source: KombuQueueSource) -> None:
        from kombu.connection import Connection

        self.source = source
        self._connection: Any = Connection(source.url)  # type: ignore[no-untyped-call]
        self._queue: Any = self._connection.SimpleQueue(source.queue, serializer="json")  # type: ignore[no-untyped-call]

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        try:
            message = self._queue.get(block=True, timeout=timeout)
        except self._queue.Empty:
            return []
        return [_delivery(message)]

    def ack(self, delivery: Delivery) -> None:
        delivery.token.ack()

    def touch(self, delivery: Delivery) -> None:
        return None  # the broker keeps an unacknowledged message with its consumer while the connection lives

    def close(self) -> None:
        self._queue.close()
        self._connection.release()


def _delivery(message: Any) -> Delivery:
    raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Delivery(None, raw, message, reason=f"the body is not JSON: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("foreign_id"), str) or not body["foreign_id"]:
        return Delivery(None, raw, message, reason="the body is not a JSON object with a foreign_id string")
    event_id = body.get("id") or message.properties.get("message_id") or hashlib.sha256(raw).hexdigest()
    headers = body.get("headers") or {}
    data = body.get("data", "")
    event = ConnectorEvent(
        id=str(event_id),
        foreign_id=body["foreign_id"],
        type=str(body.get("type", "")),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        data=data.encode() if isinstance(data, str) else json.dumps(data).encode(),
    )
    return Delivery(event, raw, message)
