"""Fixtures of the ``RecordStore`` contract tests: the stores under test and their databases.

``BACKENDS`` opens each implementation: ``memory`` is ``MemoryStore``;
``sqlite`` a fresh database file per test; ``postgres`` a database created for
this session (through the ``postgres`` maintenance database) and emptied
between tests. PostgreSQL being unreachable
fails the ``postgres`` tests: the project's test command starts it first, so a
skip would only hide a broken setup.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import InProcessBroker, Workflow
from workflow_celery.adapters.memory import MemoryStore
from workflow_celery.adapters.sql import SQLStore
from workflow_celery.adapters.sql.schema import ALL_TABLES
from workflow_celery.core.ports import RecordStore

PG_URL_ENV = "WORKFLOW_CELERY_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
TABLES = tuple(t.name for t in ALL_TABLES)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real database (SQLite file or PostgreSQL)")


def pg_base_url() -> sa.URL:
    url = sa.make_url(os.environ.get(PG_URL_ENV, DEFAULT_PG_URL))
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


class PostgresServer:
    """Creates and drops databases on the test server."""

    def __init__(self, base: sa.URL) -> None:
        self.base = base
        self.admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create_database(self, prefix: str = "wfc_contract") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def terminate_connections(self, database: str) -> int:
        """Have the server close every connection to ``database``; return once they are closed."""
        with self.admin.connect() as conn:
            # The backends are chosen first, in a materialized CTE: a condition on pg_stat_activity's pid
            # alone may be evaluated before the one on its database, on the backends of every database.
            pids = [
                pid
                for pid, terminated in conn.execute(
                    sa.text(
                        "WITH chosen AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()) "
                        "SELECT pid, pg_terminate_backend(pid) FROM chosen"
                    ),
                    {"db": database},
                )
                if terminated
            ]
            deadline = time.monotonic() + 10
            while conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": list(pids)}
            ).scalar_one():
                assert time.monotonic() < deadline, "the terminated backends did not exit"
                time.sleep(0.01)
            return len(pids)

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(pg_base_url())
    try:
        with server.admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        server.admin.dispose()
        pytest.fail(f"PostgreSQL is unreachable at {server.base!r} (set {PG_URL_ENV}): {exc}", pytrace=False)
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    """A database of this session's own, with the schema migrated to head."""
    url = pg_server.create_database()
    store = SQLStore(url)
    store.create_schema()
    store.dispose()
    return url


@dataclass
class Backend:
    """The store under test, and how to open more stores on the same data."""

    name: str
    store: RecordStore
    url: str | None = None
    _opened: list[SQLStore] = field(default_factory=list)

    @property
    def is_sql(self) -> bool:
        return self.url is not None

    def open(self) -> RecordStore:
        """Another store on the same data, with a connection pool of its own."""
        if self.url is None:
            return self.store
        store = SQLStore(self.url)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in [self.store, *self._opened]:
            if isinstance(store, SQLStore):
                store.dispose()


def _memory(request: pytest.FixtureRequest) -> Backend:
    return Backend("memory", MemoryStore())


def _sqlite(request: pytest.FixtureRequest) -> Backend:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = SQLStore(url)
    store.create_schema()
    return Backend("sqlite", store, url)


def _postgres(request: pytest.FixtureRequest) -> Backend:
    url: str = request.getfixturevalue("pg_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)}"))
    engine.dispose()
    return Backend("postgres", SQLStore(url), url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def sql_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The SQL implementations only, for what MemoryStore has no notion of (migrations, connections)."""
    backend = BACKENDS[request.param](request)
    yield backend
    backend.close()


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker()


@pytest.fixture
def wf(store: SQLStore, broker: InProcessBroker) -> Workflow[Order, OrderStatus]:
    """The order workflow on the test module's ``store`` fixture (the caller's-transaction tests)."""
    return order_workflow().build(broker, store)
