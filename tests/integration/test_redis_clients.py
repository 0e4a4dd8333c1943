"""The Redis channels of workflow workers and dispatchers reuse one redis-py client per pool."""

from __future__ import annotations

from typing import Any

import redis
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis

from workflow_celery.adapters.celery.redis_transport import reusing_transport


def test_a_channel_reuses_its_client_until_its_pool_changes_and_still_publishes(broker_url: str) -> None:
    transport: Any = reusing_transport(kombu_redis.Transport)
    assert transport is not None and reusing_transport(type("Other", (), {})) is None
    with Connection(broker_url, transport=transport) as conn:
        channel: Any = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first  # the stock channel builds a new one each time
        assert channel._create_client(asynchronous=True) is not first
        with conn.Producer() as producer:
            producer.publish({"n": 1}, routing_key="reused-client-test", declare=[], serializer="json")
            producer.publish({"n": 2}, routing_key="reused-client-test", serializer="json")
        assert redis.Redis.from_url(broker_url).llen("reused-client-test") == 2
        channel._pool = None  # what the channel does when its connection is lost
        assert channel._create_client() is not first
