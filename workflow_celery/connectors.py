"""Connectors: hand events from outside to a workflow (``Builder.add_connector``).

``RedisStreamSource`` (a Redis stream and its consumer group) and
``KombuQueueSource`` (a queue on RabbitMQ or another kombu transport) ship
with the library; a source of your own implements ``ConnectorSource``.
See ``docs/connectors.md``.
"""

from __future__ import annotations

from .adapters.kombu_queue import KombuQueueSource
from .adapters.redis_streams import RedisStreamSource
from .core.connectors import ConnectorEvent, ConnectorSource, ConnectorStream, Delivery
from .runtime.connectors import ConnectorRunner, parked_queue

__all__ = [
    "ConnectorEvent",
    "ConnectorRunner",
    "ConnectorSource",
    "ConnectorStream",
    "Delivery",
    "KombuQueueSource",
    "RedisStreamSource",
    "parked_queue",
]
