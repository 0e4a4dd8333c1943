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
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.connectors import DEFAULT_MAX_ATTEMPTS, ConnectorEvent, Delivery
from ..core.errors import ConfigurationError

log = logging.getLogger(__name__)

RESERVED_FIELDS = ("foreign_id", "type", "data")
FORGET_IDLE_MS = 3_600_000
URL_SCHEMES = ("redis://", "rediss://", "unix://")

# Claim the entry again (which resets its idle time) only while this consumer still holds it: a plain
# XCLAIM would take it back from a consumer that took it over, and both would handle it. An entry
# deleted from the stream (XDEL, trimming) since it was read is this consumer's still: nobody else
# can get it, and its fields are in hand. One acknowledged by another consumer is not.
_KEEP_IF_MINE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then
    if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 0 then return 1 end
    return 0
end
if p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
MIN_CLAIM_AFTER = timedelta(seconds=1)
MAX_BATCH = 10_000
_ENTRY_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")


class RedisStreamSource:
    """Events from the Redis stream ``stream`` at ``url``, read by the consumer group ``group``.

    ``group``: by default ``workflow-celery.{workflow}.{connector}``, one per
    connector, so that two connectors reading one stream each get every
    entry (consumers of one group share its entries). ``start``: where a new
    group starts reading (``"0"``: the whole stream; ``"$"``: only entries
    added after it was created). ``claim_after``: how long an entry handed to
    a consumer stays untouched before another consumer takes it over; the
    consumer holding it touches it every third of that while it holds it.
    ``batch``: entries read at once. ``max_attempts``: failures of the
    connector's function before an event is parked. Needs redis-py (the
    ``redis`` extra). Raises ``ConfigurationError`` for a bad argument.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        group: str | None = None,
        start: str = "0",
        claim_after: timedelta = timedelta(seconds=60),
        batch: int = 10,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
            raise ConfigurationError(f"RedisStreamSource: url must start with one of {', '.join(URL_SCHEMES)}")
        named = isinstance(stream, str) and bool(stream)
        if not named or (group is not None and (not isinstance(group, str) or not group)):
            raise ConfigurationError("RedisStreamSource needs a stream name, and a group name if one is given")
        if not isinstance(start, str) or not _stream_id(start):
            raise ConfigurationError(f"RedisStreamSource: start must be '0', '$' or a stream entry id, not {start!r}")
        if not isinstance(claim_after, timedelta) or claim_after < MIN_CLAIM_AFTER:
            raise ConfigurationError("RedisStreamSource: claim_after must be a timedelta of at least 1 second")
        if not _positive(batch) or batch > MAX_BATCH or not _positive(max_attempts):
            raise ConfigurationError(
                f"RedisStreamSource: batch (at most {MAX_BATCH:,}) and max_attempts must be whole numbers, at least 1"
            )
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

    def open(self, consumer: str, connector: str) -> RedisStreamConsumer:
        return RedisStreamConsumer(self, consumer, self.group or f"workflow-celery.{connector}")


class RedisStreamConsumer:
    """One member of the consumer group ``group`` of the source's stream."""

    def __init__(self, source: RedisStreamSource, consumer: str, group: str) -> None:
        import redis

        self.source = source
        self.consumer = consumer
        self.group = group
        self.keep_every: float | None = source.claim_after.total_seconds() / 3
        self._redis: Any = redis.Redis.from_url(source.url)
        self._keep_if_mine: Any = self._redis.register_script(_KEEP_IF_MINE)
        try:
            self._redis.xgroup_create(source.stream, group, id=source.start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            entries = self._redis.xlen(source.stream)
            if entries:
                # Also what a deleted group looks like when it comes back: say that the stream is read again.
                log.warning(
                    "created consumer group %s of Redis stream %s from %r: of its %d entries, those after that "
                    "point are handed out (again, if the group existed before and was deleted)",
                    group, source.stream, source.start, entries,
                )  # fmt: skip
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._forget_dead_consumers()

    def _forget_dead_consumers(self) -> None:
        # A consumer name carries its process' id: each restart leaves the old name in the group. Names
        # holding nothing and silent for an hour are dropped (their pending entries, if any, are kept).
        for c in self._redis.xinfo_consumers(self.source.stream, self.group):
            if _name(c) != self.consumer and c["pending"] == 0 and c["idle"] > FORGET_IDLE_MS:
                self._redis.xgroup_delconsumer(self.source.stream, self.group, _name(c))

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        s, group = self.source, self.group
        if self._own_pending:
            # What the group handed this consumer name before it last stopped.
            found = self._redis.xreadgroup(group, self.consumer, {s.stream: "0"}, count=s.batch)
            entries = found[0][1] if found else []
            if entries:
                counts = self._delivery_counts([entry_id for entry_id, _ in entries])
                return [self._delivery(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in entries]
            self._own_pending = False
        # Entries other consumers left are taken over one at a time: one whose function ends the process
        # (and so its consumer, again and again) does not take the entries read with it down as well.
        claim_ms = int(s.claim_after.total_seconds() * 1000)
        cursor, claimed, *rest = self._redis.xautoclaim(
            s.stream, group, self.consumer, min_idle_time=claim_ms, start_id=self._claim_cursor, count=1
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        # Redis 7 names the pending entries it found deleted from the stream, and drops them from the group.
        deleted = [self._delivery(entry_id, None) for entry_id in (rest[0] if rest else [])]
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        if claimed or deleted:
            counts = self._delivery_counts([entry_id for entry_id, _ in claimed])
            return [*deleted, *(self._delivery(e, f, counts.get(e, 1)) for e, f in claimed)]
        block = max(int(timeout * 1000), 1)
        found = self._redis.xreadgroup(group, self.consumer, {s.stream: ">"}, count=s.batch, block=block)
        return [self._delivery(entry_id, fields) for entry_id, fields in (found[0][1] if found else [])]

    def _delivery_counts(self, entry_ids: list[bytes]) -> dict[bytes, int]:
        """How many times the group has handed out each entry (XPENDING's delivery count)."""
        if not entry_ids:
            return {}
        pending = self._redis.xpending_range(
            self.source.stream, self.group, min=entry_ids[0], max=entry_ids[-1], count=len(entry_ids),
            consumername=self.consumer,
        )  # fmt: skip
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    def ack(self, delivery: Delivery) -> None:
        self._redis.xack(self.source.stream, self.group, delivery.token)

    def touch(self, delivery: Delivery) -> bool:
        return bool(self._keep_if_mine(keys=[self.source.stream], args=[self.group, delivery.token, self.consumer]))

    def close(self) -> None:
        try:
            consumers = self._redis.xinfo_consumers(self.source.stream, self.group)
            mine = [c for c in consumers if _name(c) == self.consumer]
            if mine and mine[0]["pending"] == 0:  # a clean stop leaves no name behind
                self._redis.xgroup_delconsumer(self.source.stream, self.group, self.consumer)
        finally:
            self._redis.close()

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes] | None, delivered: int = 1) -> Delivery:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        text = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (fields or {}).items()}
        raw = json.dumps({"id": eid, "fields": text}).encode()
        if not fields:
            # A pending entry deleted from the stream (XDEL, trimming) comes back without its fields.
            return Delivery(None, raw, entry_id, reason=f"stream entry {eid} was deleted before it was handled")
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
        return Delivery(event, raw, entry_id, delivered=delivered)


def _positive(value: object) -> bool:
    return type(value) is int and value >= 1


def _stream_id(start: str) -> bool:
    if start == "$":
        return True
    if not _ENTRY_ID.fullmatch(start):
        return False
    return all(int(part) < 2**64 for part in start.split("-"))


def _name(consumer: Any) -> str:
    name = consumer["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
