"""Talking to the broker behind Celery's back: raw bytes, hand-made messages, queue depths, RabbitMQ vhosts.

Every helper takes a broker URL, so a test runs unchanged on Redis and on RabbitMQ.
"""

from __future__ import annotations

from typing import Any

import amqp
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def declared(name: str) -> Queue:
    """A queue declared as a Celery worker declares a missing queue: a direct exchange of the same name."""
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def push_raw(broker_url: str, queue: str, raw: bytes) -> None:
    """Put bytes on a queue exactly as they are, bypassing every client library's envelope."""
    if is_redis(broker_url):
        client = redis.Redis.from_url(broker_url)
        try:
            client.lpush(queue, raw)
        finally:
            client.close()
        return
    with Connection(broker_url) as conn:
        channel = conn.default_channel
        declared(queue)(channel).declare()
        # py-amqp directly: no content type, no headers, only the body.
        channel.basic_publish(amqp.Message(raw), exchange="", routing_key=queue)


def publish(
    broker_url: str,
    queue: str,
    body: bytes | str,
    *,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    headers: dict[str, Any] | None = None,
) -> None:
    """A message made by hand: whatever body, content type and headers, routed to ``queue``."""
    with Connection(broker_url) as conn:
        Producer(conn.default_channel).publish(
            body,
            exchange=queue,
            routing_key=queue,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers or {},
            declare=[declared(queue)],
        )


def depth(broker_url: str, queue: str) -> int:
    """How many messages wait in ``queue`` (0 for a queue that does not exist)."""
    with Connection(broker_url) as conn:
        try:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        except conn.channel_errors:
            return 0
        return int(count)
