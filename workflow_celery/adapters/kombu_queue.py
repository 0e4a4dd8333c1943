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
import uuid
from collections.abc import Sequence
from typing import Any

from ..core.connectors import DEFAULT_MAX_ATTEMPTS, ConnectorEvent, Delivery
from ..core.errors import ConfigurationError


class KombuQueueSource:
    """Events from the queue ``queue`` of the broker at ``url`` (declared durable if missing).

    Every consumer of a queue takes its share of the messages: two connectors
    (of one workflow or two) that both need every event read a queue each.
    Raises ``ConfigurationError`` for a bad argument or a URL whose transport
    kombu does not know.
    """

    def __init__(self, url: str, queue: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError("KombuQueueSource needs a queue name")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ConfigurationError("KombuQueueSource: max_attempts must be a whole number, at least 1")
        if not isinstance(url, str) or not url:
            raise ConfigurationError("KombuQueueSource needs a broker URL, such as amqp://guest:guest@localhost//")
        from kombu.connection import Connection

        try:
            Connection(url).get_transport_cls()  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigurationError(f"KombuQueueSource: no kombu transport for {url.split('://', 1)[0]!r}") from exc
        self.url = url
        self.queue = queue
        self.max_attempts = max_attempts
        self.name = f"queue:{queue}"

    def __repr__(self) -> str:
        return f"KombuQueueSource(queue={self.queue!r})"

    def open(self, consumer: str, connector: str) -> KombuQueueConsumer:
        return KombuQueueConsumer(self)


class KombuQueueConsumer:
    """One consumer of the queue, on a connection of its own, holding one message at a time."""

    keep_every: float | None = None  # the broker keeps an unacknowledged message with its consumer

    def __init__(self, source: KombuQueueSource) -> None:
        from kombu.connection import Connection

        self.source = source
        self._connection: Any = Connection(source.url)  # type: ignore[no-untyped-call]
        self._queue: Any = self._connection.SimpleQueue(source.queue, serializer="json")  # type: ignore[no-untyped-call]
        consumer = self._queue.consumer
        # Without a limit the broker pushes the whole queue to the first consumer, out of the others' reach.
        consumer.qos(prefetch_count=1)
        # Raw messages, never decoded by kombu: a body its content type says is JSON but is not would raise
        # out of every fetch, and come back unacknowledged, for ever. _delivery parses and parks it.
        consumer.on_message = self._queue.buffer.append
        consumer.on_decode_error = lambda message, exc: self._queue.buffer.append(message)

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        try:
            message = self._queue.get(block=True, timeout=timeout)
        except self._queue.Empty:
            return []
        return [_delivery(message)]

    def ack(self, delivery: Delivery) -> None:
        delivery.token.ack()

    def touch(self, delivery: Delivery) -> bool:
        return True  # the broker keeps an unacknowledged message with its consumer while the connection lives

    def close(self) -> None:
        self._queue.close()
        self._connection.release()


def _delivery(message: Any) -> Delivery:
    raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    # Nothing in a message's bytes tells two identical ones apart: each is parked as a dead letter of its own.
    key = str(message.properties.get("message_id") or uuid.uuid4())
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Delivery(None, raw, message, reason=f"the body is not JSON: {exc}", key=key)
    if not isinstance(body, dict) or not isinstance(body.get("foreign_id"), str) or not body["foreign_id"]:
        return Delivery(None, raw, message, reason="the body is not a JSON object with a foreign_id string", key=key)
    # The body's id (0 is one), else the message_id property, else a digest of the body.
    given = (body.get("id"), message.properties.get("message_id"))
    event_id = next((v for v in given if v is not None and v != ""), hashlib.sha256(raw).hexdigest())
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
