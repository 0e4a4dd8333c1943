"""``DjangoStore``: the record store on a database of ``settings.DATABASES``, writing in Django's transactions."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from sqlalchemy import URL, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError

from ...adapters.sql.engine import make_engine
from ...adapters.sql.store import SQLStore
from ...core.errors import ConfigurationError
from .borrowed import borrowed, lending_engine
from .settings import database_alias

__all__ = ["DjangoStore"]

APP = "workflow_celery.contrib.django"

# Django's OPTIONS that are Django's own, not libpq's (django.db.backends.postgresql.base).
_DJANGO_OPTIONS = frozenset({"assume_role", "isolation_level", "pool", "server_side_binding"})
_DATABASE_KEY = "workflow_celery_django_database"


class DjangoStore(SQLStore):
    """The record store on the database ``using`` of ``settings.DATABASES`` (PostgreSQL).

    ``using`` defaults to ``settings.WORKFLOW_CELERY["DATABASE"]``, else
    ``"default"``. Inside ``transaction.atomic(using=…)`` on that database,
    every write (``trigger``, ``callback``, ``pause``, ``resume``, ``cancel``,
    ``delete_data``) runs on Django's connection, in Django's transaction:
    committed with the view's own rows or not at all, each in a SAVEPOINT so a
    failed one (``WorkflowInProgress``) leaves the transaction usable, and its
    messages published by ``transaction.on_commit`` (never, if the block rolls
    back). Outside an atomic block each write commits on its own, on the
    store's own pooled connections (as ``SQLStore``), which are also what
    workers use.

    The store follows the database's settings as Django's test runner changes
    them: under ``manage.py test`` it writes to the test database. Its tables
    are created by ``manage.py migrate`` (the app ``workflow_celery.contrib.django``).

    Raises ``ConfigurationError`` when ``using`` names no database, or one that
    is not PostgreSQL.
    """

    def __init__(self, using: str | None = None, *, pool_size: int = 5, echo: bool = False) -> None:
        alias = using or database_alias()
        if alias not in connections:
            raise ConfigurationError(f"settings.DATABASES has no database {alias!r}")
        django_connection = connections[alias]
        if django_connection.vendor != "postgresql":
            raise ConfigurationError(
                f"DjangoStore needs PostgreSQL (it writes in Django's transactions on Django's connection); "
                f"settings.DATABASES[{alias!r}] is {django_connection.vendor}. On another database, "
                "SQLStore(url) works (SQLite included) but each of its writes commits on its own"
            )
        engine = make_engine(
            _url(django_connection.settings_dict).render_as_string(hide_password=False), pool_size=pool_size, echo=echo
        )
        _follow_settings(engine, alias)
        super().__init__(engine)
        self.using = alias
        self._c.ambient = self._atomic_block
        self._c.schema_hint = f'run `python manage.py migrate` with "{APP}" in INSTALLED_APPS (database {alias!r})'
        _stores.add(self)

    def __repr__(self) -> str:
        return f"DjangoStore(using={self.using!r})"

    def _atomic_block(self) -> DjangoTransaction | None:
        django_connection = connections[self.using]
        forbidden = django_connection.connect
        if type(forbidden).__name__ == "_DatabaseFailure":
            # A Django test that did not declare this database (``databases``): Django refuses its own
            # queries there, and so does the store, rather than write to the real database.
            forbidden()
        if not django_connection.in_atomic_block:
            return None
        return DjangoTransaction(django_connection, lending_engine())


class DjangoTransaction:
    """The transaction of Django's ``atomic`` block a ``DjangoStore`` writes in (a ``CallerTransaction``)."""

    def __init__(self, django_connection: Any, lending: Engine) -> None:
        self._connection = django_connection
        self._lending = lending

    @contextmanager
    def savepoint(self) -> Iterator[Connection]:
        # Django's own check: a statement after a failed one in the block would fail with a cryptic error.
        self._connection.validate_no_broken_transaction()
        with borrowed(self._lending, self._connection) as conn, conn.begin_nested():
            yield conn

    def after_commit(self, fn: Callable[[], None]) -> None:
        # robust: one failed publish does not keep Django's other on_commit callbacks from running
        # (publishing logs its own failures, and the relay rings what was not published).
        transaction.on_commit(fn, using=self._connection.alias, robust=True)


def _connect_params(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """psycopg's connection parameters for a ``DATABASES`` entry, as Django connects (its own options dropped)."""
    params: dict[str, Any] = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k not in _DJANGO_OPTIONS}
    for key, setting in (
        ("dbname", "NAME"),
        ("user", "USER"),
        ("password", "PASSWORD"),
        ("host", "HOST"),
        ("port", "PORT"),
    ):
        if settings_dict.get(setting):
            params[key] = settings_dict[setting]
    return params


def _url(settings_dict: dict[str, Any]) -> URL:
    port = settings_dict.get("PORT")
    return URL.create(
        "postgresql+psycopg",
        username=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=int(port) if port else None,
        database=settings_dict.get("NAME") or None,
    )


def _follow_settings(engine: Engine, alias: str) -> None:
    """Connect with the database's settings as they are now, and drop connections to a database they no longer name.

    Django's test runner renames the database (``test_…``) after the
    project's modules, and so this store, were imported.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        settings_dict = connections[alias].settings_dict
        cparams.update(_connect_params(settings_dict))
        record.info[_DATABASE_KEY] = settings_dict.get("NAME")

    @event.listens_for(engine.pool, "checkout")
    def _checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get(_DATABASE_KEY) != connections[alias].settings_dict.get("NAME"):
            raise DisconnectionError("the database's settings name another database now (Django's test runner)")


_stores: weakref.WeakSet[DjangoStore] = weakref.WeakSet()


def _close_idle_connections(sender: Any, connection: Any, **_kwargs: Any) -> None:
    """Close every store's pooled connections when Django connects to no database to create or drop one.

    That is how Django's test runner creates and drops the test database; an
    idle connection of ours to it would make ``DROP DATABASE`` fail ("being
    accessed by other users"). The next statement reconnects.
    """
    if connection.alias == NO_DB_ALIAS:
        for store in list(_stores):
            store.dispose()


connection_created.connect(_close_idle_connections, weak=False, dispatch_uid="workflow_celery_close_idle_connections")
