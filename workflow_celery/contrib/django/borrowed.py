"""Django's own database connection, lent to SQLAlchemy for the statements of one block.

The store's statements are SQLAlchemy's; inside ``transaction.atomic()`` they
must run on the very connection Django's transaction is open on. SQLAlchemy
takes that connection from a pool whose ``creator`` hands out a proxy of it:
the proxy forwards every call to the connection but refuses the ones that
belong to Django alone (commit, rollback, close, changing its settings), so
the transaction stays Django's to end, whatever SQLAlchemy does when the
block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

from psycopg.types.datetime import TimestamptzLoader
from sqlalchemy import create_engine
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

_lent: ContextVar[Any] = ContextVar("workflow_celery_django_connection", default=None)


class Lent:
    """A psycopg connection of Django's, as SQLAlchemy sees it while borrowing it."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Any) -> None:
        object.__setattr__(self, "_connection", connection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Autocommit, isolation level...: Django's settings of its connection, not ours to change.
        raise AttributeError(f"a connection lent by Django is not changed by workflow-celery ({name})")

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._connection.cursor(*args, **kwargs)
        # Django loads timestamps in its own way (naive local times when USE_TZ is False); the store's
        # columns are read as aware datetimes, as on its own connections. The cursor's adapters are a
        # copy: Django's connection is untouched.
        cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        return cursor

    def commit(self) -> None:
        """Django commits its transaction."""

    def rollback(self) -> None:
        """Django rolls its transaction back; the store's failed statements roll back to their SAVEPOINT."""

    def close(self) -> None:
        """Django closes its connection."""


class LendingDialect(PGDialect_psycopg):
    """psycopg's dialect, without what it does to connections of its own."""

    supports_statement_cache = True

    def on_connect(self) -> None:
        # SQLAlchemy adds a notice handler to each connection it opens; a lent one would collect one
        # per block, for as long as Django keeps it.
        return None


_DRIVER = "workflow_celery_lent"
registry.register(f"postgresql.{_DRIVER}", __name__, LendingDialect.__name__)


@cache
def lending_engine() -> Engine:
    """The engine whose connections are the Django connections lent by ``borrowed`` (one per process).

    SQLAlchemy learns the server's version from the first connection it is
    lent, once.
    """
    return create_engine(
        f"postgresql+{_DRIVER}://",
        creator=_take,
        poolclass=NullPool,
        pool_reset_on_return=None,
        use_native_hstore=False,
    )


def _take() -> Lent:
    connection = _lent.get()
    if connection is None:  # pragma: no cover - only `borrowed` connects
        raise RuntimeError("a lending engine connects only inside borrowed()")
    return Lent(connection)


@contextmanager
def borrowed(engine: Engine, django_connection: Any) -> Iterator[Connection]:
    """``django_connection``'s DBAPI connection as a SQLAlchemy ``Connection`` of ``engine``, until the block ends.

    ``engine`` is a ``lending_engine()``. Nothing is committed, rolled back or
    closed when the block ends: whatever was written stays in Django's
    transaction.
    """
    django_connection.ensure_connection()
    token = _lent.set(django_connection.connection)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        _lent.reset(token)
