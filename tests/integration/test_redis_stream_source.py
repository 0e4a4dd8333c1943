"""RedisStreamSource on a real Redis: an event is handled by one consumer at a time, however slow its function."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy.engine import make_url

from tests.acceptance.helpers import wait_until
from workflow_celery import Builder, ConfigurationError, MemoryStore, SQLStore, Workflow
from workflow_celery.connectors import ConnectorEvent, ConnectorRunner, RedisStreamSource
from workflow_celery.core.ports import one_per_database
from workflow_celery.testing import in_process

from ..unit.workflows import Status, Thing, chain

STREAM = "wfc-test-stream"
CLAIM_AFTER = timedelta(seconds=1)


class Calls:
    """Every call of the connector's function: (event id, consumer thread), and the overlaps seen."""

    def __init__(self, slow: dict[str, float]) -> None:
        self.slow = slow
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.running: Counter[str] = Counter()
        self.overlaps = 0

    def fn(self, wf: Workflow[Thing, Status], event: ConnectorEvent) -> None:
        with self.lock:
            self.calls.append(event.id)
            self.running[event.id] += 1
            self.overlaps += self.running[event.id] > 1
        try:
            time.sleep(self.slow.get(event.foreign_id, 0.0))
        finally:
            with self.lock:
                self.running[event.id] -= 1


def _workflow(source: RedisStreamSource, calls: Calls, name: str = "in") -> Workflow[Thing, Status]:
    b: Builder[Thing, Status] = chain()
    b.add_connector(name, source, calls.fn)
    wf, _ = in_process(b, store=MemoryStore())
    return wf


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _acknowledged(client: Any, group: str) -> bool:
    return int(client.xpending(STREAM, group)["pending"]) == 0


def test_a_slow_event_and_the_ones_behind_it_are_each_handled_once_by_two_consumers(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    # One batch: a function that takes five claim times, then three quick ones waiting behind it.
    pipe = client.pipeline(transaction=True)
    pipe.xadd(STREAM, {"foreign_id": "slow"})
    for i in range(3):
        pipe.xadd(STREAM, {"foreign_id": f"quick-{i}"})
    ids = [_text(i) for i in pipe.execute()]
    calls = Calls({"slow": CLAIM_AFTER.total_seconds() * 5})
    source = RedisStreamSource(broker_url, STREAM, claim_after=CLAIM_AFTER)
    wf = _workflow(source, calls)
    first = ConnectorRunner([wf], consumer="first").start()
    wait_until(lambda: calls.calls[:1] == [ids[0]], 30, "the first consumer to start on the slow event")
    second = ConnectorRunner([wf], consumer="second").start()
    try:
        group = "workflow-celery.chain.in"
        wait_until(lambda: len(calls.calls) >= 4 and _acknowledged(client, group), 60, "every event handled")
        time.sleep(CLAIM_AFTER.total_seconds() * 2)  # time for a second consumer to take one over, if it could
    finally:
        first.stop()
        second.stop()
    assert sorted(calls.calls) == sorted(ids) and calls.overlaps == 0


def test_two_connectors_on_one_stream_each_get_every_entry(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    ids = [_text(client.xadd(STREAM, {"foreign_id": f"order-{i}"})) for i in range(5)]
    one, two = Calls({}), Calls({})
    source = RedisStreamSource(broker_url, STREAM, claim_after=CLAIM_AFTER)
    runners = [
        ConnectorRunner([_workflow(source, one, "a")], consumer="c1").start(),
        ConnectorRunner([_workflow(source, two, "b")], consumer="c2").start(),
    ]
    try:
        wait_until(lambda: len(one.calls) == 5 and len(two.calls) == 5, 30, "both connectors to get all five")
    finally:
        for runner in runners:
            runner.stop()
    assert sorted(one.calls) == sorted(two.calls) == sorted(ids)
    groups = sorted(_text(g["name"]) for g in client.xinfo_groups(STREAM))
    assert groups == ["workflow-celery.chain.a", "workflow-celery.chain.b"]


def test_an_entry_deleted_while_pending_is_parked_as_deleted(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    source = RedisStreamSource(broker_url, STREAM, group="g")
    stream = source.open("c", "chain.in")
    entry = _text(client.xadd(STREAM, {"foreign_id": "order-1", "id": "not the entry id"}))
    [delivery] = stream.fetch(0.1)
    assert delivery.event is not None and delivery.event.id == entry
    assert json.loads(delivery.raw) == {"id": entry, "fields": {"foreign_id": "order-1", "id": "not the entry id"}}
    client.xdel(STREAM, entry)
    reopened = source.open("c", "chain.in")  # a restart under the same name reads its pending entries first
    [again] = reopened.fetch(0.1)
    assert again.event is None and again.reason == f"stream entry {entry} was deleted before it was handled"
    stream.close()
    reopened.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": None},
        {"url": "nonsense://x"},
        {"stream": ""},
        {"group": ""},
        {"start": "bogus"},
        {"claim_after": 30},
        {"claim_after": timedelta(0)},
        {"claim_after": timedelta(microseconds=500)},
        {"start": "1-"},
        {"start": "99999999999999999999999"},
        {"start": "\uff11\uff12"},  # full-width digits, which str.isdigit() takes
        {"batch": 0},
        {"batch": 10**9},
        {"batch": True},
        {"max_attempts": "3"},
    ],
)
def test_bad_arguments_are_refused_in_words(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"url": "redis://127.0.0.1:6379/0", "stream": STREAM, **kwargs}
    with pytest.raises(ConfigurationError, match="RedisStreamSource"):
        RedisStreamSource(arguments.pop("url"), arguments.pop("stream"), **arguments)


def test_an_event_whose_consumers_keep_dying_is_parked_and_the_one_read_with_it_is_handled(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    group = "workflow-celery.chain.in"
    client.xgroup_create(STREAM, group, id="0", mkstream=True)
    poison = _text(client.xadd(STREAM, {"foreign_id": "poison"}))
    good = _text(client.xadd(STREAM, {"foreign_id": "good"}))
    client.xreadgroup(group, "dead-1", {STREAM: ">"}, count=10)  # both handed to a consumer that then died
    source = RedisStreamSource(broker_url, STREAM, claim_after=timedelta(seconds=1), max_attempts=2)
    time.sleep(1.1)
    [taken] = source.open("dead-2", "chain.in").fetch(0.1)  # taken over one at a time; then that one died too
    assert taken.token.decode() == poison and taken.delivered == 2
    time.sleep(1.1)
    calls = Calls({})
    store = MemoryStore()
    b: Builder[Thing, Status] = chain()
    b.add_connector("in", source, calls.fn)
    wf, _ = in_process(b, store=store)
    runner = ConnectorRunner([wf], consumer="live").start()
    try:
        wait_until(lambda: _acknowledged(client, group) and calls.calls == [good], 30, "poison parked, good handled")
    finally:
        runner.stop()
    [parked] = store.dead_letters()
    assert parked.reason.startswith("handed out 3 times and never acknowledged")
    assert json.loads(parked.body)["id"] == poison


def test_entries_deleted_from_the_stream_are_handled_when_in_hand_and_parked_when_not(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    group = "workflow-celery.chain.in"
    client.xgroup_create(STREAM, group, id="0", mkstream=True)
    gone = _text(client.xadd(STREAM, {"foreign_id": "gone"}))
    client.xreadgroup(group, "dead", {STREAM: ">"}, count=10)
    client.xdel(STREAM, gone)  # its holder died: nobody has its fields any more
    source = RedisStreamSource(broker_url, STREAM, claim_after=timedelta(seconds=1))
    held = source.open("live", "chain.in")
    time.sleep(1.1)
    [deleted] = held.fetch(0.1)
    assert deleted.event is None and deleted.reason == f"stream entry {gone} was deleted before it was handled"
    in_hand = _text(client.xadd(STREAM, {"foreign_id": "in-hand"}))
    [delivery] = held.fetch(0.1)
    client.xdel(STREAM, in_hand)  # read, then deleted (a capped stream trimmed it): still this consumer's
    assert held.touch(delivery) and held.touch(delivery)
    other = source.open("other", "chain.in")
    acked = _text(client.xadd(STREAM, {"foreign_id": "acked"}))
    [theirs] = other.fetch(0.1)
    other.ack(theirs)
    assert not held.touch(replace(theirs)) and theirs.token.decode() == acked  # done by another: not ours
    held.close()
    other.close()


def test_stores_on_one_database_under_two_spellings_of_its_url_are_one(pg_database: str) -> None:
    url = make_url(pg_database)
    one = SQLStore(url.render_as_string(hide_password=False))
    other = SQLStore(url.set(host="localhost", port=5432).render_as_string(hide_password=False))
    one.create_schema()
    memory = MemoryStore()
    try:
        assert one.location == other.location and one.location is not None
        assert one_per_database([one, other, memory]) == [one, memory]
    finally:
        one.dispose()
        other.dispose()
