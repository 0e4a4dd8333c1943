"""Writing in the caller's transaction: a SQLAlchemy ``Session`` the application is using.

Inside ``SQLStore.joined(session)`` every statement of that store runs on the
session's connection, in the session's transaction, so a run triggered (or
paused, cancelled, called back) in a view is committed with the view's own
rows or rolled back with them. Each write is wrapped in a SAVEPOINT, so a
write that fails (``WorkflowInProgress``) leaves the caller's transaction
usable. The doorbells of those writes are published once the session
commits (its ``after_commit`` event), and dropped if it rolls back; until
then they are rows in the same transaction, and the relay rings any whose
publish is lost, as always.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction

from ...core.errors import ConfigurationError

_PENDING_KEY = "workflow_celery_after_commit"


class CallerTransaction(Protocol):
    """A transaction of the caller's that a store's writes join (a SQLAlchemy session's, Django's)."""

    def savepoint(self) -> AbstractContextManager[Connection]:
        """The transaction's connection inside a SAVEPOINT: a failed statement leaves the transaction usable."""
        ...

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the outermost transaction commits; forget it if what it was registered in rolls back."""
        ...


class JoinedSession:
    """A SQLAlchemy ``Session``'s transaction, joined by ``SQLStore.joined``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def savepoint(self) -> AbstractContextManager[Connection]:
        return savepoint(self.session)

    def after_commit(self, fn: Callable[[], None]) -> None:
        after_commit(self.session, fn)


# Store (by ``id`` of its Connections) -> the transaction it writes in, for this thread or task.
_joined: ContextVar[dict[int, CallerTransaction] | None] = ContextVar("workflow_celery_joined", default=None)


# Which database a connection is on, whatever its URL says (localhost or 127.0.0.1, a default port, a
# socket): its name and the server's start time, which two servers do not share.
IDENTITY = text("SELECT current_database(), pg_postmaster_start_time()")


def identity(conn: Connection) -> tuple[Any, ...]:
    """The database ``conn`` is on (see ``IDENTITY``)."""
    return tuple(conn.execute(IDENTITY).one())


def location(engine: Engine, database_identity: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """Which database ``engine`` reaches, whatever its URL's spelling; None for a private in-memory SQLite one.

    PostgreSQL: the database's identity (``IDENTITY``), or the URL when the
    server does not answer. SQLite: the file's real path.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:") or str(url.database).startswith("file:"):
            return None
        return ("sqlite", os.path.realpath(str(url.database)))
    try:
        return ("postgresql", *database_identity())
    except Exception:
        return ("url", url.render_as_string(hide_password=False))


@contextmanager
def joining(
    owner: object, session: Session, dialect: str, store_identity: Callable[[bool], tuple[Any, ...]]
) -> Iterator[None]:
    """Make ``owner``'s statements run in ``session``'s transaction until the block ends.

    ``store_identity(fresh)`` is the identity of the store's database (read
    again when ``fresh``: the server may have restarted since it was cached).
    """
    if not isinstance(session, Session):
        raise ConfigurationError(f"joined() takes a SQLAlchemy Session, got {type(session).__name__}")
    if dialect != "postgresql":
        raise ConfigurationError("writing in the caller's transaction needs PostgreSQL")
    if session.get_bind().dialect.name != "postgresql":
        raise ConfigurationError("the session is not on PostgreSQL: its writes could not be atomic with the store's")
    theirs = identity(session.connection())
    if theirs != store_identity(False) and theirs != store_identity(True):
        raise ConfigurationError(
            "the session is bound to another database than the workflow's store: its writes could not be "
            "atomic with the session's; use the store outside joined() (each write commits on its own)"
        )
    current = _joined.get() or {}
    token = _joined.set({**current, id(owner): JoinedSession(session)})
    try:
        yield
    finally:
        _joined.reset(token)


def joined_transaction(owner: object) -> CallerTransaction | None:
    """The caller's transaction ``owner`` writes in right now (``joining``), if any."""
    joined = _joined.get()
    return None if joined is None else joined.get(id(owner))


@contextmanager
def savepoint(session: Session) -> Iterator[Connection]:
    """The session's connection inside a SAVEPOINT: a failed statement leaves the transaction usable."""
    with session.begin_nested():
        yield session.connection()


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Call ``fn`` once ``session``'s outermost transaction commits.

    ``fn`` is forgotten if the transaction it was registered in (the
    session's current one: a SAVEPOINT of the caller's, or the outermost)
    or any transaction around it rolls back, since the rows it would
    announce are gone.
    """
    pending: list[tuple[SessionTransaction, Callable[[], None]]] | None = session.info.get(_PENDING_KEY)
    if pending is None:
        pending = session.info[_PENDING_KEY] = []
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_soft_rollback", _drop_pending)
    current = session.get_nested_transaction() or session.get_transaction()
    assert current is not None  # a write just ran in it
    pending.append((current, fn))


def _run_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT was released: the outermost transaction may still roll back
    pending: list[tuple[SessionTransaction, Callable[[], None]]] = session.info.get(_PENDING_KEY) or []
    fns = [fn for _, fn in pending]
    pending.clear()
    for fn in fns:
        fn()  # publishing: it logs its own failures, and the relay rings what was not published


def _drop_pending(session: Session, previous: SessionTransaction) -> None:
    pending: list[tuple[SessionTransaction, Callable[[], None]]] = session.info.get(_PENDING_KEY) or []
    pending[:] = [(t, fn) for t, fn in pending if not _within(t, previous)]


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
