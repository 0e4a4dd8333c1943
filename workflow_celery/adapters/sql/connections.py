"""How a store statement gets a connection, and what a failed one means to the caller.

PostgreSQL: every store method is one statement on an autocommit connection,
atomic and one round trip. SQLite: statements inside ``BEGIN IMMEDIATE``
transactions, which take the write lock up front, so a writer waits for the
busy timeout instead of failing with "database is locked" when another writer
made its snapshot stale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import TextClause

from ...core.errors import DatabaseConnectionLost, SchemaMissing
from .engine import claims_engine, guard_forks
from .joined import CallerTransaction, joined_transaction
from .rows import connection_gone, driver_lost, schema_missing

OWN_WRITE_LOCK_TIMEOUT = "5s"
"""How long a write made on its own beside a caller's transaction waits for a row lock (``on_its_own``)."""

# Connections (by id) whose writes commit on their own in this thread or task, caller's transaction or not.
_on_its_own: ContextVar[frozenset[int]] = ContextVar("workflow_celery_on_its_own", default=frozenset())


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
        # The statements every transition sends skip SQLAlchemy's execution layer on psycopg (see fetch_one).
        self.driver_cursors = self.postgresql and engine.dialect.driver == "psycopg"
        self._driver_sql: dict[TextClause, str] = {}
        # What creates the schema where this store is used (a framework's own command), if not ours.
        self.schema_hint: str | None = None
        # The caller's transaction statements join without being told to (Django's atomic blocks), if any.
        self.ambient: Callable[[], CallerTransaction | None] | None = None

    def caller_transaction(self) -> CallerTransaction | None:
        """The caller's transaction this store's writes join right now: ``joining``'s, else the ambient one."""
        if id(self) in _on_its_own.get():
            return None
        joined = joined_transaction(self)
        if joined is None and self.ambient is not None:
            return self.ambient()
        return joined

    @contextmanager
    def on_its_own(self) -> Iterator[None]:
        """Statements in the block commit on their own, beside the caller's transaction if there is one."""
        if self.caller_transaction() is None:
            yield
            return
        token = _on_its_own.set(_on_its_own.get() | {id(self)})
        try:
            yield
        finally:
            _on_its_own.reset(token)

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
            hint = self.schema_hint or f"run `workflow-celery db upgrade --url {url}` (or call store.create_schema())"
            raise SchemaMissing(
                f"the database has no workflow-celery schema, or an older one ({detail}): {hint}"
            ) from None

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for one statement: autocommit on PostgreSQL, or the caller's transaction's (``joined``)."""
        caller = self.caller_transaction()
        if caller is not None:
            with self.schema_checked(), _lost_mid_statement(in_callers_transaction=True), caller.savepoint() as conn:
                yield conn
            return
        with self.schema_checked(), self.guard(), self._autocommit.connect() as conn, _lost_mid_statement():
            if not (self.postgresql and id(self) in _on_its_own.get()):
                yield conn
                return
            # Beside a transaction of this very thread: a row it locked would be waited for forever.
            conn.exec_driver_sql(f"SET lock_timeout = '{OWN_WRITE_LOCK_TIMEOUT}'")
            try:
                yield conn
            finally:
                try:
                    conn.exec_driver_sql("RESET lock_timeout")
                except DBAPIError:
                    conn.invalidate()  # never back to the pool with the setting

    @contextmanager
    def claim_statement(self) -> Iterator[Connection]:
        """A statement about claims: on PostgreSQL, committed without waiting for the WAL flush."""
        with self.schema_checked(), self.guard(), self._claims.connect() as conn, _lost_mid_statement():
            yield conn

    def fetch_one(
        self, statement: TextClause, params: Mapping[str, Any], *, claims: bool = False
    ) -> Mapping[Any, Any] | None:
        """Run one statement and return its first row as a mapping (None without rows).

        On psycopg the statement goes to the driver's cursor directly: the
        claim and the commit of every transition come through here, and
        around each round trip SQLAlchemy's execution layer (execution
        context, result metadata, ``Row`` objects) costs about as much CPU as
        psycopg itself. The connection still comes from the store's pool,
        with its fork guard and checkout checks, and a psycopg error leaves as
        the SQLAlchemy error ``Connection.execute`` would have raised (a lost
        connection invalidated), so callers handle both paths alike. psycopg
        prepares each statement on a connection after a few executions, as it
        does through SQLAlchemy.
        """
        # The base engine, not its autocommit variant: the connection is put in autocommit below.
        engine = self._claims if claims else self.engine
        if (
            not self._direct(engine)
            or (not claims and self.caller_transaction() is not None)
            or id(self) in _on_its_own.get()
        ):
            with self.claim_statement() if claims else self.statement() as conn:
                row = conn.execute(statement, params).first()
            return None if row is None else row._mapping
        sql = self._driver_sql.get(statement)
        if sql is None:
            sql = self._driver_sql[statement] = str(statement.compile(dialect=self.engine.dialect))
        with self.schema_checked(), self.guard(), _lost_mid_statement():
            return self._on_driver(engine, sql, params)

    def _on_driver(self, engine: Engine, sql: str, params: Mapping[str, Any]) -> Mapping[Any, Any] | None:
        # A pooled DBAPI connection (the pool's fork guard and checkout checks run), without the
        # Connection around it: that and its isolation-level events cost as much as the statement.
        fairy = engine.raw_connection()
        try:
            driver: Any = fairy.driver_connection
            # Put back as found: the pool's other users expect the driver's default (transactions).
            restore = not driver.autocommit
            if restore:
                driver.autocommit = True
            try:
                with driver.cursor(row_factory=dict_row) as cursor:
                    return cursor.execute(sql, params).fetchone()  # type: ignore[no-any-return]
            except engine.dialect.loaded_dbapi.Error as exc:
                gone = engine.dialect.is_disconnect(exc, driver, None) or driver_lost(exc, driver)
                if gone:
                    # As SQLAlchemy does for a disconnect: the server is likely gone for every pooled
                    # connection opened before now, not only this one (a restart, a failover).
                    engine.pool._invalidate(fairy, exc, _checkin=False)
                    fairy.invalidate(exc)
                    restore = False
                # No parameters in the message: they hold users' objects.
                raise DBAPIError.instance(
                    sql,
                    None,
                    exc,
                    engine.dialect.loaded_dbapi.Error,
                    hide_parameters=True,
                    connection_invalidated=gone,
                    dialect=engine.dialect,
                ) from exc
            finally:
                if restore:
                    driver.autocommit = False
        finally:
            fairy.close()

    def _direct(self, engine: Engine) -> bool:
        """Whether a statement may skip SQLAlchemy's execution layer on ``engine``.

        Only on psycopg, and only while nobody listens to the engine's
        statement events (``before_cursor_execute``, ``handle_error``...) or
        asked for ``echo``: those see every statement through ``Connection.execute``.
        """
        if not self.driver_cursors or engine.echo:
            return False
        # SQLAlchemy's own test before it looks for listeners: none was ever added to these engines.
        if not (engine._has_events or self.engine._has_events):
            # Of the dialect's events only handle_error sees statements (a do_connect listener does not).
            return not engine.dialect.dispatch.handle_error
        # Statement events live on the engines, handle_error on their dialect (SQLAlchemy's DialectEvents).
        dispatches: list[Any] = [engine.dispatch, self.engine.dispatch, engine.dialect.dispatch]
        return not any(getattr(d, name, None) for d in dispatches for name in _STATEMENT_EVENTS)

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

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction of the store's own for several statements: committed at the end, rolled back on error."""
        if not self.postgresql:
            with self.write() as conn:
                yield conn
            return
        with self.schema_checked(), self.guard(), self.engine.begin() as conn, _lost_mid_statement():
            yield conn

    def single_write(self) -> AbstractContextManager[Connection]:
        """A connection for one write statement: autocommit on PostgreSQL, a write transaction on SQLite."""
        return self.statement() if self.postgresql else self.write()

    def single_claim_write(self) -> AbstractContextManager[Connection]:
        """As ``single_write``, for a statement about claims."""
        return self.claim_statement() if self.postgresql else self.write()


# The events that see each statement executed or failing (the isolation level's engine_connect is not one).
_STATEMENT_EVENTS = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute", "handle_error")


@contextmanager
def _lost_mid_statement(*, in_callers_transaction: bool = False) -> Iterator[None]:
    # Only for statements on a connection already checked out: a failure to connect wrote nothing and
    # keeps SQLAlchemy's error. One lost while a statement ran may have been committed or not, and is
    # not retried: re-running a write that did commit would apply it twice.
    try:
        yield
    except DBAPIError as exc:
        if not connection_gone(exc):
            raise
        detail = " ".join(str(exc.orig).split("\n", 1)[0].split())
        if in_callers_transaction:
            # Nothing of an uncommitted transaction survives its connection.
            raise DatabaseConnectionLost(
                f"the connection to the database was lost while a statement ran ({detail}): the caller's "
                "transaction is gone with it, and nothing it wrote was committed"
            ) from exc
        raise DatabaseConnectionLost(
            f"the connection to the database was lost while a statement ran ({detail}): it may or may not "
            "have been committed; read the run back before doing it again"
        ) from exc
