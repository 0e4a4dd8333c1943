"""Engines for the SQL store: drivers, SQLite's locking and WAL, PostgreSQL's connection checks, forks.

Every engine a store uses is made safe to use across ``fork``: Celery's
prefork pool forks worker processes after the parent may have opened
connections, and a child writing on its parent's socket would interleave
bytes with it. A connection records the process that opened it, and a
checkout in another process discards it (without closing the parent's
socket) for a new one: SQLAlchemy's own recipe for pools and ``os.fork``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from select import POLLIN, poll
from typing import Any

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool, StaticPool

from ...core.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine configured the way the store needs it.

    ``postgresql://`` URLs get the psycopg 3 driver. SQLite connections may be
    used from any thread, wait up to 30 s for the write lock, and file
    databases use WAL so readers never block the writer; an in-memory
    database is a single shared connection (a second one would be a second,
    empty database).
    """
    if url in (":memory:", "sqlite://:memory:"):
        url = "sqlite://"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        if in_memory:
            engine = create_engine(parsed, echo=echo, poolclass=StaticPool, connect_args=connect_args)
        else:
            engine = create_engine(parsed, echo=echo, pool_size=pool_size, connect_args=connect_args)
            guard_forks(engine.pool)
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    if backend == "postgresql":
        engine = create_engine(parsed, echo=echo, pool_size=pool_size)
        guard_forks(engine.pool)
        event.listen(engine, "checkout", _closed_by_server)
        return engine
    raise ConfigurationError(f"unsupported database {backend!r}: use postgresql or sqlite")


def guard_forks(pool: Pool) -> None:
    """Make ``pool`` hand each process connections of its own (SQLAlchemy's recipe for ``os.fork``)."""
    if event.contains(pool, "checkout", _opened_in_this_process):
        return
    event.listen(pool, "connect", _remember_process)
    # First of the checkout listeners: none may touch a connection of another process.
    event.listen(pool, "checkout", _opened_in_this_process, insert=True)


def _remember_process(_dbapi_connection: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _opened_in_this_process(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if record.info.get("pid", os.getpid()) != os.getpid():
        # Forget the parent's connection without closing it: the parent still owns that socket.
        record.dbapi_connection = proxy.dbapi_connection = None
        raise DisconnectionError("the connection was opened by another process (before a fork)")


def claims_engine(engine: Engine) -> Engine:
    """An engine on connections of its own, with the same driver and settings, for claims.

    Claims only coordinate workers while the server is up: one lost with a
    crash of the server lets an attempt run twice, and the compare-and-set
    still commits it once. So they are written on connections that do not
    wait for the WAL flush, which is most of what taking a claim costs.
    """
    pool = engine.pool.recreate()
    event.listen(pool, "connect", _asynchronous_commit)
    guard_forks(pool)
    claims = create_engine(engine.url, pool=pool, isolation_level="AUTOCOMMIT")
    if event.contains(engine, "checkout", _closed_by_server):
        event.listen(claims, "checkout", _closed_by_server)
    return claims


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if wal:
                _enable_wal(cursor)
        finally:
            cursor.close()


def _closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled PostgreSQL connection the server has closed, before any statement is sent on it.

    An idle connection has nothing to read. When the server closes it (a
    restart, a failover, ``pg_terminate_backend``, an idle timeout) it first
    sends the reason and then the end of the stream, so the socket becomes
    readable: one ``poll`` with no wait, no round trip. Raising
    ``DisconnectionError`` here makes SQLAlchemy's pool open a new connection
    instead (its documented pessimistic disconnect handling), so the statement
    runs once, on a live connection. A connection that dies without a word
    (a host gone from the network) is not seen here; a statement on it fails
    with ``DatabaseConnectionLost``, and is never sent again on its own.
    """
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return
    try:
        fd = pgconn.socket
    except Exception:
        raise DisconnectionError("the connection is closed") from None
    poller = poll()
    poller.register(fd, POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection, or sent something while it was idle")


def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
    # Through a cursor, which every DBAPI driver has (psycopg 2 connections have no ``execute``).
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET synchronous_commit TO off")
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = autocommit


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file: once set it stays. Switching needs an
    # exclusive lock, and SQLite reports "database is locked" at once (without
    # consulting the busy timeout) when another connection holds any lock, as
    # happens when several processes open a new database together.
    # The result is not checked: a file system without shared memory keeps the
    # old mode, which is slower but correct.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
