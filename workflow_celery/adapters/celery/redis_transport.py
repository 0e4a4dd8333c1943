"""Items on a Redis queue that are not messages are kept aside instead of stopping the worker.

A Redis queue is a list, and anyone can push anything onto it. kombu's Redis
transport pops an item (``BRPOP``) and parses it as its JSON envelope before
any consumer sees it; an item that is not one — not JSON, JSON of another
shape, a body that is not valid base64 — raises out of the worker's event loop,
and Celery stops the worker ("Unrecoverable error"), the item gone with it.

The consumer of a worker of an app with workflows connects through a subclass
of the transport whose channel hands such an item, with the queue it was
popped from, to the dead-letter box and goes on. The subclass only looks at
what the stock channel already did: the ``BRPOP`` reply it parsed (recorded
through a redis-py response callback) and whether the item reached a
consumer; an error raised after that is not the item's fault and is left to
Celery, as before.
"""

from __future__ import annotations

from contextvars import ContextVar
from queue import Empty
from typing import Any, ClassVar, Protocol

from .dead_letters import describe


class KeepsBytes(Protocol):
    """Where an item that is not a message goes (a ``DeadLetterBox``)."""

    def keep_bytes(self, queue: str, raw: bytes, reason: str) -> None: ...


_delivering: ContextVar[str | None] = ContextVar("workflow_celery_delivering_queue", default=None)


def delivering_queue() -> str | None:
    """The Redis queue whose message is being handed to the consumer right now, if any."""
    return _delivering.get()


class _ReusesItsClient:
    """Mixed into kombu's Redis channel: one redis-py client per channel, not one per command.

    The stock channel builds a new ``redis.Redis`` around its connection
    pool for every command it sends that is not a ``BRPOP`` (each publish,
    each acknowledgement, each delivery's entry in the unacked index), and
    building one fills its table of reply parsers: about 0.1 ms of CPU, as
    much as the command itself. A client is only a view of the pool, so one
    per channel does the same, until the channel gets a new pool (after a
    lost connection), when a new client is made for it.
    """

    _reused_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        client = self._reused_client
        if client is None or client.connection_pool is not pool:
            client = self._reused_client = super()._create_client(asynchronous)  # type: ignore[misc]
        return client


class _KeepsItemsThatAreNotMessages:
    """Mixed into kombu's Redis channel (``kombu.transport.redis.Channel`` or a subclass)."""

    dead_letter_box: ClassVar[KeepsBytes]
    _brpop_reply: Any = None
    _handed_over = False

    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous)  # type: ignore[misc]
        if asynchronous:  # the client that reads BRPOP replies
            parse = client.response_callbacks.get("BRPOP")

            def remember(response: Any, **options: Any) -> Any:
                self._brpop_reply = response
                return parse(response, **options) if parse is not None else response

            client.set_response_callback("BRPOP", remember)
        return client

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        callback = kwargs.get("callback")
        if callback is not None:

            def handed_over(message: Any) -> Any:
                self._handed_over = True
                token = _delivering.set(queue)
                try:
                    return callback(message)
                finally:
                    _delivering.reset(token)

            kwargs["callback"] = handed_over
        return super().basic_consume(queue, *args, **kwargs)  # type: ignore[misc]

    def _brpop_read(self, **options: Any) -> Any:
        self._brpop_reply = None
        self._handed_over = False
        try:
            return super()._brpop_read(**options)  # type: ignore[misc]
        except Exception as exc:
            reply = self._brpop_reply
            transport: Any = getattr(self, "connection", None)
            if self._handed_over or not reply or isinstance(exc, _broker_errors(transport)):
                raise
            reason = f"not a message: {describe(exc)}"
            self.dead_letter_box.keep_bytes(self._queue_of(reply[0]), bytes(reply[1]), reason)
            return True

    def _queue_of(self, key: Any) -> str:
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        prefix: str = getattr(self, "global_keyprefix", "") or ""
        if prefix and name.startswith(prefix):
            name = name[len(prefix) :]
        # Priority lists are named ``{queue}{sep}{priority}``, as the stock channel splits them.
        sep = str(getattr(self, "sep", "\x06\x16"))
        return name.rsplit(sep, 1)[0]


def _broker_errors(transport: Any) -> tuple[type[BaseException], ...]:
    """Errors of Redis itself, which Celery answers by reconnecting: never the item's fault.

    The transport counts ``KeyError`` among its connection errors; here it is
    what an envelope without ``properties`` raises, so it is left out.
    """
    errors = (*getattr(transport, "connection_errors", ()), *getattr(transport, "channel_errors", ()))
    return (*(e for e in errors if not issubclass(KeyError, e)), Empty)


class _ShownAsItsScheme(type):
    """Metaclass of the transport subclass: kombu writes a transport class into URLs (``Connected to …``)."""

    url_scheme = "redis"

    def __str__(cls) -> str:
        return cls.url_scheme


def keeping_transport(transport_cls: type, box: KeepsBytes, scheme: str = "redis") -> type | None:
    """A subclass of a Redis transport class that keeps aside items that are not messages.

    ``scheme`` is how it shows in URLs (the broker URL's own). Returns None
    for any other transport (RabbitMQ delivers bytes with properties, which
    the consumer handles).
    """
    return _redis_subclass(transport_cls, "Keeping", (_KeepsItemsThatAreNotMessages, _ReusesItsClient), scheme, box)


def reusing_transport(transport_cls: type, scheme: str = "redis") -> type | None:
    """A subclass of a Redis transport class whose channels reuse one redis-py client (``_ReusesItsClient``).

    For publishing connections. Returns None for any other transport.
    """
    return _redis_subclass(transport_cls, "Reusing", (_ReusesItsClient,), scheme)


def _redis_subclass(
    transport_cls: type, prefix: str, mixins: tuple[type, ...], scheme: str, box: KeepsBytes | None = None
) -> type | None:
    try:
        # Imported here: Redis is an extra, and an app on RabbitMQ may not have it installed.
        from kombu.transport import redis as kombu_redis
    except ImportError:
        return None
    if not (isinstance(transport_cls, type) and issubclass(transport_cls, kombu_redis.Transport)):
        return None
    base_channel: type = transport_cls.Channel
    attributes: dict[str, Any] = {"__module__": __name__}
    if box is not None:
        attributes["dead_letter_box"] = box
    channel = type(f"{prefix}{base_channel.__name__}", (*mixins, base_channel), attributes)
    namespace = {"Channel": channel, "url_scheme": scheme, "__module__": __name__}
    return _ShownAsItsScheme(f"{prefix}{transport_cls.__name__}", (transport_cls,), namespace)
