"""Publishing doorbells as Celery task messages, never waiting long on the broker.

Publishing right after a commit is only a fast path: the change is committed
and its doorbells are rows the outbox relay publishes if this does not. So a
publish gives up after ``publish_timeout`` instead of holding the caller (a
web request calling ``trigger``) while a broker does not answer. The bound
comes from the broker clients' own timeouts, on connections kept for
workflow messages only, so the app's other connections (a worker's consumer,
your own tasks) keep their settings:

- Redis: kombu's ``socket_timeout`` and ``socket_connect_timeout``;
- RabbitMQ (py-amqp): ``connect_timeout``, ``read_timeout``, ``write_timeout``
  and Celery's per-publish ``timeout``;
- any broker: kombu's ``connect_timeout``, Celery's publish retries off (the
  relay is the retry), and at most ``publish_timeout`` waiting for a pooled
  connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu.connection import ConnectionPool
from kombu.pools import ProducerPool

from ...core.definition import Definition
from ...core.doorbell import describe_task, task_id, with_attempt
from ...core.ports import OutboxMessage
from .redis_transport import reusing_transport
from .registry import registry

_DISPATCHERS_ATTR = "_workflow_celery_dispatchers"


def _definition(app: Celery, workflow_name: str) -> Definition[Any, Any] | None:
    wf = registry(app).get(workflow_name)
    return wf.definition if wf is not None else None


def bounded_transport_options(driver_type: str, timeout: float, configured: dict[str, Any]) -> dict[str, Any]:
    """Transport options that make every blocking broker call of ``driver_type`` give up after ``timeout`` s.

    A shorter timeout the app configured itself is kept.
    """
    names = {
        "redis": ("socket_timeout", "socket_connect_timeout"),
        "amqp": ("read_timeout", "write_timeout"),
    }.get(driver_type, ())
    options = dict(configured)
    for name in names:
        current = options.get(name)
        options[name] = timeout if current is None else min(float(current), timeout)
    return options


def dispatcher_for(app: Celery, publish_timeout: timedelta) -> CeleryDispatcher:
    """The dispatcher of ``app`` for this timeout: workflows built with the same one share its connections."""
    dispatchers: dict[timedelta, CeleryDispatcher] | None = getattr(app, _DISPATCHERS_ATTR, None)
    if dispatchers is None:
        dispatchers = {}
        setattr(app, _DISPATCHERS_ATTR, dispatchers)
    if publish_timeout not in dispatchers:
        dispatchers[publish_timeout] = CeleryDispatcher(app, publish_timeout)
    return dispatchers[publish_timeout]


class _ConnectionsOfOneProcess(ConnectionPool):
    """A connection pool that a forked child leaves alone.

    kombu's pools "close" their connections in every forked child, and closing a
    py-amqp connection shuts its socket down, for the parent as well: each new
    pool process of a prefork worker would cut the main process' publishing
    connection. A child opens a pool of its own instead (``_producers``).
    """

    close_after_fork = False


class CeleryDispatcher:
    """Publishes doorbells as Celery task messages (JSON kwargs, ids only), giving up after ``publish_timeout``.

    The task id names the doorbell and the attempt (``{doorbell}-attempt-{n}``)
    and ``kwargsrepr`` says, for Flower, which work of which run it is.
    ``publish`` raises whatever the broker client raised (a timeout, a refused
    connection, ``LimitExceeded`` when every pooled connection stayed busy);
    the engine logs it and the relay publishes the rows later.
    """

    def __init__(self, app: Celery, publish_timeout: timedelta = timedelta(seconds=1)) -> None:
        self.app = app
        self.timeout = publish_timeout.total_seconds()
        self._lock = threading.Lock()
        self._pool: ProducerPool | None = None
        self._pid = 0

    def _producers(self) -> ProducerPool:
        # A forked child (Celery's prefork pool) must not write on its parent's sockets: one pool per process.
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pid == pid:
            return pool
        with self._lock:
            if self._pool is None or self._pid != pid:
                self._pool = self._new_pool()
                self._pid = pid
            return self._pool

    def _new_pool(self) -> ProducerPool:
        probe = self.app.connection_for_write()
        options = bounded_transport_options(
            probe.transport.driver_type, self.timeout, dict(self.app.conf.broker_transport_options or {})
        )
        scheme = probe.transport_cls if isinstance(probe.transport_cls, str) else "redis"
        reusing = reusing_transport(probe.get_transport_cls(), scheme)
        probe.release()
        connection = self.app.connection_for_write(
            connect_timeout=self.timeout, transport_options=options, **({"transport": reusing} if reusing else {})
        )
        limit = self.app.conf.broker_pool_limit
        connections = _ConnectionsOfOneProcess(connection, limit=limit)  # type: ignore[no-untyped-call]
        return ProducerPool(connections, limit=limit, Producer=self.app.amqp.Producer, close_after_fork=False)  # type: ignore[no-untyped-call]

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        producers = self._producers()
        with producers.acquire(block=True, timeout=self.timeout) as producer:  # type: ignore[no-untyped-call]
            for m in messages:
                attempt = m.retries + 1
                self.app.send_task(
                    m.task,
                    kwargs=with_attempt(m.body, attempt),
                    queue=m.queue,
                    task_id=task_id(m.id, attempt),
                    retries=m.retries,
                    kwargsrepr=describe_task(_definition(self.app, m.workflow_name), m.body, attempt),
                    producer=producer,
                    serializer="json",
                    ignore_result=True,
                    # The relay is the retry: a publish that fails leaves its row due for the relay.
                    retry=False,
                    timeout=self.timeout,
                )
