"""How a store statement gets a connection, and what a failed one means to the caller.

PostgreSQL: every store method is one statement on an autocommit connection,
atomic and one round trip. SQLite: statements inside ``BEGIN IMMEDIATE``
transactions, which take the write lock up front, so a writer waits for the
busy timeout instead of failing with "database is locked" when another writer
made its snapshot stale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from ...core.errors import DatabaseConnectionLost, SchemaMissing
from .engine import claims_engine, guard_forks
from .rows import connection_gone, schema_missing


class Connections:
    """The engines of one store: its own, autocommit for single statements, and one for claims."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"
        # One shared in-memory connection cannot hold two transactions at once, nor be used after a fork.
        self._shared_connection = isinstance(engine.pool, StaticPool)
        if not self._shared_connection:
            guard_forks(engine.pool)
        self._autocommit: Engine = engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgresql else engine
        self._claims: Engine = claims_engine(engine) if self.postgresql else self._autocommit
        self._lock = threading.RLock()

    def dispose(self) -> None:
        """Close every pooled connection; the next statement reconnects."""
        self.engine.dispose()
        if self._claims is not self._autocommit:
            self._claims.dispose()

    def guard(self) -> AbstractContextManager[Any]:
        return self._lock if self._shared_connection else nullcontext()

    @contextmanager
    def schema_checked(self) -> Iterator[None]:
        # Without this, a store used before `db upgrade` fails with the whole SQL statement in the message.
        try:
            yield
        except DBAPIError as exc:
            if not schema_missing(exc):
                raise
            detail = " ".join(str(exc.orig).split("\n", 1)[0].split())
            url = self.engine.url.render_as_string(hide_password=True)
            raise SchemaMissing(
                f"the database has no workflow-celery schema, or an older one ({detail}): "
                f"run `workflow-celery db upgrade --url {url}` (or call store.create_schema())"
            ) from None

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for one statement: autocommit on PostgreSQL."""
        with self.schema_checked(), self.guard(), self._autocommit.connect() as conn, _lost_mid_statement():
            yield conn

    @contextmanager
    def claim_statement(self) -> Iterator[Connection]:
        """A statement about claims: on PostgreSQL, committed without waiting for the WAL flush."""
        with self.schema_checked(), self.guard(), self._claims.connect() as conn, _lost_mid_statement():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A SQLite write transaction holding the database lock from its first statement."""
        with self.schema_checked(), self.guard(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def single_write(self) -> AbstractContextManager[Connection]:
        """A connection for one write statement: autocommit on PostgreSQL, a write transaction on SQLite."""
        return self.statement() if self.postgresql else self.write()

    def single_claim_write(self) -> AbstractContextManager[Connection]:
        """As ``single_write``, for a statement about claims."""
        return self.claim_statement() if self.postgresql else self.write()


@contextmanager
def _lost_mid_statement() -> Iterator[None]:
    # Only for statements on a connection already checked out: a failure to connect wrote nothing and
    # keeps SQLAlchemy's error. One lost while a statement ran may have been committed or not, and is
    # not retried: re-running a write that did commit would apply it twice.
    try:
        yield
    except DBAPIError as exc:
        if not connection_gone(exc):
            raise
        detail = " ".join(str(exc.orig).split("\n", 1)[0].split())
        raise DatabaseConnectionLost(
            f"the connection to the database was lost while a statement ran ({detail}): it may or may not "
            "have been committed; read the run back before doing it again"
        ) from exc
