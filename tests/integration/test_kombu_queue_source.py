"""KombuQueueSource on a real RabbitMQ: consumers share a queue one message at a time; bad input is named."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.connection import Connection

from tests.acceptance.conftest import rabbitmq_vhost
from workflow_celery import ConfigurationError, InProcessBroker, MemoryStore
from workflow_celery.connectors import ConnectorRunner, KombuQueueSource

from ..unit.test_connectors import start_run
from ..unit.workflows import chain

QUEUE = "wfc-test-queue"


@pytest.fixture
def amqp_url() -> Iterator[str]:
    with rabbitmq_vhost() as url:
        yield url


def _publish(url: str, *bodies: Any, content_type: str = "application/json") -> None:
    with Connection(url) as conn:
        producer = conn.Producer()
        for body in bodies:
            producer.publish(body, routing_key=QUEUE, content_type=content_type, content_encoding="utf-8")


def test_consumers_share_the_queue_a_message_at_a_time_and_junk_is_handed_out_raw(amqp_url: str) -> None:
    source = KombuQueueSource(amqp_url, QUEUE)
    first, second = source.open("c1", "chain.in"), source.open("c2", "chain.in")  # both declare the queue
    _publish(amqp_url, *[f'{{"id": "e-{i}", "foreign_id": "order-{i}"}}' for i in range(4)])
    # Not JSON, though its content type says so: handed out raw, to be parked, not raised from every fetch.
    _publish(amqp_url, "not json at all", "not json at all", '{"id": 0, "foreign_id": "order-zero"}')
    got_first = [d for _ in range(3) for d in first.fetch(1.0)]
    # Prefetch 1: the first consumer holds one unacknowledged message at a time, so the second gets the next.
    got_second = [d for _ in range(3) for d in second.fetch(1.0)]
    assert len(got_first) == 1 and len(got_second) == 1
    deliveries = got_first + got_second
    first.ack(got_first[0])
    second.ack(got_second[0])
    for _ in range(40):
        if len(deliveries) == 7:
            break
        for stream in (first, second):
            for d in stream.fetch(0.2):
                deliveries.append(d)
                stream.ack(d)
    events = sorted(d.event.id for d in deliveries if d.event is not None)
    assert events == ["0", "e-0", "e-1", "e-2", "e-3"]
    junk = [d for d in deliveries if d.event is None]
    assert [d.raw for d in junk] == [b"not json at all"] * 2 and junk[0].key != junk[1].key
    first.close()
    second.close()


def test_identical_junk_messages_are_two_dead_letters(amqp_url: str) -> None:
    b = chain()
    b.add_connector("in", KombuQueueSource(amqp_url, QUEUE), start_run)
    store = MemoryStore()
    wf = b.build(InProcessBroker(), store)
    KombuQueueSource(amqp_url, QUEUE).open("declare", "chain.in").close()
    _publish(amqp_url, b"\xff\xfe junk", b"\xff\xfe junk", content_type="application/octet-stream")
    runner = ConnectorRunner([wf], consumer="t").start()
    try:
        for _ in range(200):
            if len(store.dead_letters()) == 2:
                break
            time.sleep(0.05)
    finally:
        runner.stop()
    assert [letter.body for letter in store.dead_letters()] == [b"\xff\xfe junk"] * 2


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("nonsense://x", QUEUE), {}, "no kombu transport for 'nonsense'"),
        ((None, QUEUE), {}, "needs a broker URL"),
        (("amqp://guest:guest@localhost//", ""), {}, "needs a queue name"),
        (("amqp://guest:guest@localhost//", QUEUE), {"max_attempts": None}, "max_attempts must be a whole number"),
    ],
)
def test_bad_arguments_are_refused_in_words(args: tuple[Any, ...], kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        KombuQueueSource(*args, **kwargs)
