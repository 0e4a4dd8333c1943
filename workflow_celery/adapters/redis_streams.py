"""``RedisStreamSource``: a connector's events from a Redis stream, shared by a consumer group.

An entry's fields: ``foreign_id`` (required), ``type``, ``data``; every other
field becomes a header. The event's id is the entry's id; its time is the
one the id carries. Each consumer first reads what the group handed it
before (a worker restarted under the same name), then takes over entries
another consumer left unacknowledged for ``claim_after`` (it died), then
reads new entries. Nothing is acknowledged before the connector's function
returned, so the group's pending entries are the cursor: they survive any
worker's restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.connectors import DEFAULT_MAX_ATTEMPTS, ConnectorEvent, Delivery
from ..core.errors import ConfigurationError

RESERVED_FIELDS = ("foreign_id", "type", "data")
FORGET_IDLE_MS = 3_600_000


class RedisStreamSource:
    """Events from the Redis stream ``stream`` at ``url``, read by the consumer group ``group``.

    ``start``: where a new group starts reading (``"0"``: the whole stream;
    ``"$"``: only entries added after it was created). ``claim_after``: how
    long an entry handed to a consumer stays unacknowledged before another
    consumer takes it over. ``max_attempts``: failures of the connector's
    function before an event is parked. Needs redis-py (the ``redis`` extra).
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        group: str = "workflow-celery",
        start: str = "0",
        claim_after: timedelta = timedelta(seconds=60),
        batch: int = 10,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if not stream or not group:
            raise ConfigurationError("RedisStreamSource needs a stream and a group name")
        if claim_after <= timedelta(0) or batch < 1 or max_attempts < 1:
            raise ConfigurationError("RedisStreamSource: claim_after, batch and max_attempts must be positive")
        self.url = url
        self.stream = stream
        self.group = group
        self.start = start
        self.claim_after = claim_after
        self.batch = batch
        self.max_attempts = max_attempts
        self.name = f"redis-stream:{stream}"

    def __repr__(self) -> str:
        return f"RedisStreamSource(stream={self.stream!r}, group={self.group!r})"

    def open(self, consumer: str) -> RedisStreamConsumer:
        return RedisStreamConsumer(self, consumer)


class RedisStreamConsumer:
    """One member of the source's consumer group."""

    def __init__(self, source: RedisStreamSource, consumer: str) -> None:
        import redis

        self.source = source
        self.consumer = consumer
        self._redis: Any = redis.Redis.from_url(source.url)
        try:
            self._redis.xgroup_create(source.stream, source.group, id=source.start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._forget_dead_consumers()

    def _forget_dead_consumers(self) -> None:
        # A consumer name carries its process' id: each restart leaves the old name in the group. Names
        # holding nothing and silent for an hour are dropped (their pending entries, if any, are kept).
        for c in self._redis.xinfo_consumers(self.source.stream, self.source.group):
            if _name(c) != self.consumer and c["pending"] == 0 and c["idle"] > FORGET_IDLE_MS:
                self._redis.xgroup_delconsumer(self.source.stream, self.source.group, _name(c))

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        s = self.source
        if self._own_pending:
            # What the group handed this consumer name before it last stopped.
            found = self._redis.xreadgroup(s.group, self.consumer, {s.stream: "0"}, count=s.batch)
            entries = found[0][1] if found else []
            if entries:
                return [self._delivery(entry_id, fields) for entry_id, fields in entries]
            self._own_pending = False
        claim_ms = int(s.claim_after.total_seconds() * 1000)
        cursor, claimed, *_ = self._redis.xautoclaim(
            s.stream, s.group, self.consumer, min_idle_time=claim_ms, start_id=self._claim_cursor, count=s.batch
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        if claimed:
            return [self._delivery(entry_id, fields) for entry_id, fields in claimed]
        block = max(int(timeout * 1000), 1)
        found = self._redis.xreadgroup(s.group, self.consumer, {s.stream: ">"}, count=s.batch, block=block)
        return [self._delivery(entry_id, fields) for entry_id, fields in (found[0][1] if found else [])]

    def ack(self, delivery: Delivery) -> None:
        self._redis.xack(self.source.stream, self.source.group, delivery.token)

    def touch(self, delivery: Delivery) -> None:
        # Claiming it again resets its idle time, so no other consumer takes it over during the retries.
        self._redis.xclaim(self.source.stream, self.source.group, self.consumer, 0, [delivery.token], justid=True)

    def close(self) -> None:
        try:
            consumers = self._redis.xinfo_consumers(self.source.stream, self.source.group)
            mine = [c for c in consumers if _name(c) == self.consumer]
            if mine and mine[0]["pending"] == 0:  # a clean stop leaves no name behind
                self._redis.xgroup_delconsumer(self.source.stream, self.source.group, self.consumer)
        finally:
            self._redis.close()

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Delivery:
        eid = entry_id.decode()
        text = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
        raw = json.dumps({"id": eid, **text}).encode()
        foreign_id = text.get("foreign_id", "")
        if not foreign_id:
            return Delivery(None, raw, entry_id, reason=f"stream entry {eid} has no foreign_id field")
        millis = int(eid.split("-", 1)[0])
        event = ConnectorEvent(
            id=eid,
            foreign_id=foreign_id,
            type=text.get("type", ""),
            headers={k: v for k, v in text.items() if k not in RESERVED_FIELDS},
            created_at=datetime.fromtimestamp(millis / 1000, UTC),
            data=fields.get(b"data", b""),
        )
        return Delivery(event, raw, entry_id)


def _name(consumer: Any) -> str:
    name = consumer["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
