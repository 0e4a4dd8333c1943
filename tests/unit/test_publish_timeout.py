"""Publishing gives up after ``publish_timeout``: the connections it uses carry the broker clients' timeouts.

No broker is contacted here (kombu connects lazily); ``tests/acceptance/test_outages.py``
freezes a real Redis.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from celery import Celery

from tests.unit.workflows import Status, Thing, chain, start
from workflow_celery import Builder, ConfigurationError, MemoryStore
from workflow_celery.adapters.celery.dispatcher import CeleryDispatcher


def app(url: str, **transport_options: object) -> Celery:
    celery = Celery("publish-timeout")
    celery.conf.broker_url = url
    celery.conf.broker_transport_options = transport_options
    return celery


def publishing_connection(dispatcher: CeleryDispatcher):  # type: ignore[no-untyped-def]
    return dispatcher._producers().connections.connection


def test_redis_publishes_time_out_on_connect_and_on_every_command() -> None:
    celery = app("redis://127.0.0.1:6379/15", visibility_timeout=3600)
    wf = chain().build(celery, MemoryStore(), publish_timeout=timedelta(seconds=2))
    connection = publishing_connection(wf.dispatcher)  # type: ignore[arg-type]
    assert connection.connect_timeout == 2.0
    assert connection.transport_options == {
        "visibility_timeout": 3600,
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
    }
    # The app's own connections (a worker's consumer, the app's other tasks) keep the app's settings.
    assert celery.connection_for_write().transport_options == {"visibility_timeout": 3600}


def test_a_shorter_timeout_of_the_app_is_kept() -> None:
    dispatcher = CeleryDispatcher(app("redis://127.0.0.1:6379/15", socket_timeout=0.25), timedelta(seconds=1))
    assert publishing_connection(dispatcher).transport_options["socket_timeout"] == 0.25


def test_rabbitmq_publishes_time_out_on_reads_and_writes() -> None:
    dispatcher = CeleryDispatcher(app("amqp://guest:guest@127.0.0.1:5672//"), timedelta(seconds=1))
    connection = publishing_connection(dispatcher)
    assert connection.connect_timeout == 1.0
    assert connection.transport_options == {"read_timeout": 1.0, "write_timeout": 1.0}


def test_workflows_with_the_same_timeout_share_connections_and_a_forked_process_gets_its_own() -> None:
    celery = app("redis://127.0.0.1:6379/15")
    first = chain().build(celery, MemoryStore())
    other = Builder("other", Thing, Status)
    other.add_step(Status.START, start, Status.MIDDLE)
    second = other.build(celery, MemoryStore())
    assert first.dispatcher is second.dispatcher
    dispatcher = first.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    pool = dispatcher._producers()
    assert dispatcher._producers() is pool
    dispatcher._pid = os.getpid() + 1  # as seen from a child forked after the pool was made
    assert dispatcher._producers() is not pool


def test_publish_timeout_must_be_a_positive_timedelta() -> None:
    with pytest.raises(ConfigurationError, match="option publish_timeout must be positive"):
        chain().build(app("redis://127.0.0.1:6379/15"), MemoryStore(), publish_timeout=timedelta(0))
