"""Where a worker keeps what it cannot deliver: the store of the queue's workflow, or the log when that fails."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from celery import Celery
from kombu.message import Message

from examples.order_processing import order_workflow
from tests.unit.workflows import chain
from workflow_celery import MemoryStore, SQLStore
from workflow_celery.adapters.celery.dead_letters import DeadLetterBox


def celery_app() -> Celery:
    return Celery("box", broker="memory://", set_as_current=False)


def test_each_letter_goes_to_the_store_of_its_queues_workflow() -> None:
    app = celery_app()
    orders_store, chain_store = MemoryStore(), MemoryStore()
    order_workflow().build(app, orders_store)
    chain().build(app, chain_store)
    box = DeadLetterBox(app, "w1@host")
    box.keep_bytes("chain.middle", b"\x00junk", "not a message: JSONDecodeError")
    box.keep_bytes("celery", b"for the first workflow", "not a task message")
    message = Message(
        body=b'{"a": 1}',
        content_type="application/x-nope",
        content_encoding="binary",
        headers={"task": "order-processing.paid", "id": "m1"},
    )
    box.keep_message(message, "order-processing.paid", "invalid task message: ContentDisallowed")

    [junk] = chain_store.dead_letters()
    assert (junk.queue, junk.body, junk.worker) == ("chain.middle", b"\x00junk", "w1@host")
    kept = {d.queue: d for d in orders_store.dead_letters()}
    assert kept["celery"].body == b"for the first workflow"
    paid = kept["order-processing.paid"]
    assert (paid.body, paid.content_type, paid.content_encoding) == (b'{"a": 1}', "application/x-nope", "binary")
    assert paid.headers == '{"id": "m1", "task": "order-processing.paid"}'


def test_a_store_that_cannot_keep_it_leaves_the_bytes_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = celery_app()
    store = SQLStore(f"sqlite:///{tmp_path / 'no-schema.db'}")  # never upgraded: every write fails
    try:
        order_workflow().build(app, store)
        box = DeadLetterBox(app)
        raw = b"\xffpoison\x00" * 3
        with caplog.at_level(logging.ERROR, logger="workflow_celery"):
            box.keep_bytes("order-processing.created", raw, "not a message: JSONDecodeError")  # does not raise
        [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert "could not keep an undeliverable message from queue order-processing.created" in record.getMessage()
        assert base64.b64encode(raw).decode() in record.getMessage()

        store.create_schema()
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="workflow_celery"):
            box.keep_bytes("order-processing.created", raw, "not a message: JSONDecodeError")
        [letter] = store.dead_letters()
        assert letter.body == raw
        assert f"as dead letter {letter.id}: not a message: JSONDecodeError" in caplog.text
    finally:
        store.dispose()
