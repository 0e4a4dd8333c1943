"""The worker's consumer: nothing that arrives on a queue stops it; patterns in add_consumer and cancel_consumer.

Celery's consumer already survives some undeliverable messages — it logs a
body it cannot decode, a message without a task header, an unknown task or a
refused content type, and drops it. Others raise out of it and stop the
worker, and the broker hands the same message to the next worker: a task
header without an ``id``, a body that decodes to something other than
``[args, kwargs, embed]``, a ``task`` header that is not a string. Every one
of these is now kept as a dead letter, with its queue and the reason, before
the message leaves the queue; the worker goes on with the next.

This is a mixin over the consumer class the worker would use
(``worker_consumer``, Celery's own by default), combined by ``consumer_class``
through Celery's ``consumer_cls`` of the worker; the overridden methods are
the consumer's documented callbacks.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from celery import Celery
from celery.exceptions import InvalidTaskError
from celery.utils.imports import symbol_by_name

from .dead_letters import DeadLetterBox, describe
from .queues import is_pattern, known_queues
from .redis_transport import delivering_queue, keeping_transport
from .task_messages import task_message_problem

log = logging.getLogger(__name__)


class _KeepsUndeliverableMessages:
    """Mixed into ``celery.worker.consumer.Consumer`` (or the app's own subclass of it)."""

    dead_letter_box: ClassVar[DeadLetterBox]
    app: Celery
    connection_errors: tuple[type[BaseException], ...]
    channel_errors: tuple[type[BaseException], ...]
    _kept_aside = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ``conninfo`` is the consumer's description of its broker connection, made by Celery's ``__init__``.
        conninfo: Any = getattr(self, "conninfo", None) or self.app.connection_for_read()
        scheme = conninfo.transport_cls if isinstance(conninfo.transport_cls, str) else "redis"
        self._keeping_transport = keeping_transport(conninfo.get_transport_cls(), self.dead_letter_box, scheme)

    def connection_for_read(self, heartbeat: float | None = None) -> Any:
        if self._keeping_transport is None:
            return super().connection_for_read(heartbeat=heartbeat)  # type: ignore[misc]
        connection = self.app.connection_for_read(heartbeat=heartbeat, transport=self._keeping_transport)
        _describe_transport_as_text(connection)
        return self.ensure_connected(connection)  # type: ignore[attr-defined]

    # -- messages Celery itself reports and drops --------------------------------------------------

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        self._keep_aside(message, f"the body cannot be decoded: {describe(exc)}")
        super().on_decode_error(message, exc)  # type: ignore[misc]

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._keep_aside(message, "not a task message: it has no task header")
        super().on_unknown_message(body, message)  # type: ignore[misc]

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        name = _task_name(message)
        self._keep_aside(message, f"unknown task {name!r}: no task of this name is registered in this worker")
        super().on_unknown_task(body, message, exc)  # type: ignore[misc]

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        self._keep_aside(message, f"invalid task message: {describe(exc)}")
        super().on_invalid_task(body, message, exc)  # type: ignore[misc]

    # -- messages that would stop the worker -------------------------------------------------------

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle: Callable[[Any], Any] = super().create_task_handler(*args, **kwargs)  # type: ignore[misc]
        broker_errors = tuple(
            # Redis' transport counts KeyError as a connection error; from here it is a message without a header.
            e
            for e in (*self.connection_errors, *self.channel_errors)
            if not issubclass(KeyError, e)
        )

        def on_task_received(message: Any) -> Any:
            self._kept_aside = False
            try:
                problem = self._problem_of(message)
                if problem is not None:
                    # Celery would take it, then fail on it later (in a timer, in the event loop): refused now.
                    return self.on_invalid_task(None, message, InvalidTaskError(problem))
                return handle(message)
            except broker_errors:
                raise
            except Exception as exc:
                queue = self._queue_of(message)
                if message.acknowledged:
                    log.warning("message from queue %s was handled, then failed", queue, exc_info=True)
                    return None
                log.warning("message from queue %s cannot be handed to a task", queue, exc_info=True)
                if not self._kept_aside:
                    self._keep_aside(message, f"the message cannot be handed to a task: {describe(exc)}")
                message.reject_log_error(log, self.connection_errors)
                return None

        return on_task_received

    def _problem_of(self, message: Any) -> str | None:
        """What is wrong with a message of a task this worker knows (``task_messages``); None when nothing is."""
        headers = getattr(message, "headers", None)
        if not isinstance(headers, dict):
            return None
        name = headers.get("task")
        if name is None:
            # Protocol 1 carries the name in the body.
            try:
                payload = message.payload
            except Exception:
                return None
            name = payload.get("task") if isinstance(payload, dict) else None
        strategies: Any = getattr(self, "strategies", None) or {}
        if not isinstance(name, str) or name not in strategies:
            return None  # not a message of a task this worker runs: Celery refuses it in its own words
        return task_message_problem(message)

    def _keep_aside(self, message: Any, reason: str) -> None:
        self._kept_aside = True
        self.dead_letter_box.keep_message(message, self._queue_of(message), reason)

    @staticmethod
    def _queue_of(message: Any) -> str:
        # RabbitMQ and Redis both route a workflow's messages with the queue's name as routing key.
        info = getattr(message, "delivery_info", None)
        routing_key = info.get("routing_key") if isinstance(info, dict) else None
        return delivering_queue() or str(routing_key or "")

    # -- celery control add_consumer / cancel_consumer ---------------------------------------------

    def add_task_queue(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if not is_pattern(queue):
            return super().add_task_queue(queue, *args, **kwargs)  # type: ignore[misc, no-any-return]
        for name in self._matching(queue):
            super().add_task_queue(name)  # type: ignore[misc]
        return None

    def cancel_task_queue(self, queue: str) -> None:
        if not is_pattern(queue):
            return super().cancel_task_queue(queue)  # type: ignore[misc, no-any-return]
        for name in self._matching(queue):
            super().cancel_task_queue(name)  # type: ignore[misc]
        return None

    def _matching(self, pattern: str) -> list[str]:
        known = known_queues(self.app)
        matches = fnmatch.filter(known, pattern)
        if not matches:
            log.warning("queue pattern %r matches no queue of this app; known queues: %s", pattern, ", ".join(known))
        return matches


def consumer_class(base: Any, box: DeadLetterBox) -> type:
    """The worker's consumer class ``base`` (a class or its ``module:Name``) that keeps undeliverable messages."""
    base_cls: type = symbol_by_name(base)
    if issubclass(base_cls, _KeepsUndeliverableMessages):
        return base_cls
    return type(
        f"Keeping{base_cls.__name__}",
        (_KeepsUndeliverableMessages, base_cls),
        {"dead_letter_box": box, "__module__": __name__},
    )


def _describe_transport_as_text(connection: Any) -> None:
    """Make ``connection.info()`` (the ``broker`` of ``celery inspect stats``) name its transport as text.

    The connection's transport is a class (the keeping transport), which the
    JSON reply to a control command cannot carry; it shows as its URL scheme.
    """
    info = connection.info

    def info_as_text() -> dict[str, Any]:
        described: dict[str, Any] = info()
        transport = described.get("transport")
        if transport is not None and not isinstance(transport, str):
            described["transport"] = str(transport)
        return described

    connection.info = info_as_text


def _task_name(message: Any) -> object:
    headers = getattr(message, "headers", None)
    return headers.get("task") if isinstance(headers, dict) else None
