"""What only ``SQLStore`` promises besides the contract: migrations, UTC, missing schemas, connections, forks.

The contract itself (``workflow_celery.testing.contract``) runs against SQLite
and PostgreSQL in ``test_stores.py``.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from workflow_celery.adapters.sql import SQLStore, migrate
from workflow_celery.adapters.sql.schema import ALL_TABLES, VERSION_TABLE, metadata
from workflow_celery.core.errors import DatabaseConnectionLost, RecordNotFound, SchemaMissing
from workflow_celery.core.record import Meta
from workflow_celery.testing.contract.support import HOUR, MINUTE, T0, err, letter, msg, rec, run_threads

from .conftest import Backend, PostgresServer


def test_migrations_reach_head_and_match_schema_module(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    assert migrate.current(sql_backend.url) == migrate.head() == "0005"
    engine = sa.create_engine(sql_backend.url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": False}
            )
            assert compare_metadata(context, metadata) == []
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert tables == {VERSION_TABLE, *(t.name for t in ALL_TABLES)}
    assert {t.name for t in ALL_TABLES} == {
        "workflow_records",
        "workflow_history",
        "workflow_outbox",
        "workflow_step_errors",
        "workflow_hook_errors",
        "workflow_step_slots",
        "workflow_dead_letters",
        "workflow_schedules",
        "workflow_schedule_slots",
    }


@pytest.mark.integration
def test_current_is_none_before_the_first_upgrade(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert migrate.current(url) is None
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()


@pytest.mark.integration
def test_concurrent_create_schema_on_postgres(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("wfc_contract_migrate")
    stores = [SQLStore(url) for _ in range(4)]
    try:
        results = run_threads(4, lambda i: stores[i].create_schema())
        assert results == [None] * 4
        assert migrate.current(url) == migrate.head()
        stores[0].insert_run(rec(), [])
        assert stores[3].lookup("run-1") == rec()
    finally:
        for s in stores:
            s.dispose()


@pytest.mark.integration
def test_the_upgrade_script_for_a_dba_leaves_the_database_where_upgrade_would(pg_server: PostgresServer) -> None:
    url = sa.make_url(pg_server.create_database("wfc_contract_script"))
    script = io.StringIO()
    migrate.upgrade_script(url, output=script)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(script.getvalue())  # BEGIN; ... COMMIT; as psql would run it
        assert migrate.current(engine) == migrate.head()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


@pytest.mark.integration
def test_concurrent_create_schema_on_sqlite(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    stores = [SQLStore(url) for _ in range(4)]
    try:
        assert run_threads(4, lambda i: stores[i].create_schema()) == [None] * 4
        assert migrate.current(url) == migrate.head()
    finally:
        for s in stores:
            s.dispose()


def test_sql_returns_utc(sql_backend: Backend) -> None:
    zone = timezone(timedelta(hours=-7))
    record = rec(created_at=T0.astimezone(zone))
    sql_backend.store.insert_run(record, [msg(record, due_at=T0.astimezone(zone))])
    got = sql_backend.store.lookup("run-1")
    assert got.created_at.utcoffset() == timedelta(0) and got.created_at == T0
    assert sql_backend.store.outbox()[0].due_at.utcoffset() == timedelta(0)
    assert sql_backend.store.history("run-1")[0].created_at.utcoffset() == timedelta(0)


@pytest.mark.integration
@pytest.mark.parametrize("url", ["sqlite://", ":memory:"])
def test_in_memory_sqlite_is_shared_across_threads(url: str) -> None:
    store = SQLStore(url)
    try:
        store.create_schema()

        def work(i: int) -> int:
            r = rec(f"run-{i}", foreign_id=f"c{i}")
            store.insert_run(r, [msg(r)])
            for v in range(1, 6):
                assert store.update_run(replace(r, meta=Meta(version=v + 1)), v, [])
            return len(store.history(r.run_id))

        assert run_threads(8, work) == [6] * 8
        assert len(store.list_runs(None, limit=100)) == 8
    finally:
        store.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def schemaless_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database that exists but on which the schema was never created."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database("wfc_schemaless")


def _assert_says_to_upgrade(exc: SchemaMissing, url: str) -> None:
    message = str(exc)
    assert "\n" not in message and len(message) < 300, message
    assert f"run `workflow-celery db upgrade --url {sa.make_url(url).render_as_string()}`" in message
    assert "SELECT" not in message and "INSERT" not in message
    assert exc.__cause__ is None and exc.__suppress_context__


@pytest.mark.integration
def test_a_store_without_its_schema_says_how_to_create_it(schemaless_url: str) -> None:
    store = SQLStore(schemaless_url)
    try:
        r = rec()
        for call in [
            lambda: store.insert_run(r, [msg(r)]),
            lambda: store.lookup("run-1"),
            lambda: store.list_runs(None),
            lambda: store.count_runs(None),
            lambda: store.claim_due_outbox(T0, limit=5, redeliver_after=MINUTE, max_interval=HOUR),
            lambda: store.record_error("run-1", 1, err()),
            lambda: store.add_dead_letter(letter()),
            lambda: store.dead_letters(),
        ]:
            with pytest.raises(SchemaMissing) as missing:
                call()
            _assert_says_to_upgrade(missing.value, schemaless_url)
        store.create_schema()
        store.insert_run(r, [msg(r)])
        assert store.count_runs(None) == 1
    finally:
        store.dispose()


@pytest.mark.integration
def test_a_store_on_an_older_schema_says_how_to_upgrade(schemaless_url: str) -> None:
    store = SQLStore(schemaless_url)
    try:
        store.create_schema()
        with store.engine.begin() as conn:  # as if the code were newer than the last upgrade
            conn.execute(sa.text("DROP TABLE workflow_step_slots"))
            conn.execute(sa.text("ALTER TABLE workflow_outbox DROP COLUMN attempts"))
        with pytest.raises(SchemaMissing) as missing:
            store.acquire_slot("onboarding", 1, 2, "h1", T0, T0 + MINUTE)
        _assert_says_to_upgrade(missing.value, schemaless_url)
        with pytest.raises(SchemaMissing) as missing:
            store.outbox()
        _assert_says_to_upgrade(missing.value, schemaless_url)
        with pytest.raises(RecordNotFound):  # what the schema still has keeps working
            store.lookup("run-1")
    finally:
        store.dispose()


@pytest.mark.integration
def test_other_database_errors_are_not_mistaken_for_a_missing_schema(sql_backend: Backend) -> None:
    store = sql_backend.store
    assert isinstance(store, SQLStore)
    with pytest.raises(sa.exc.DBAPIError) as failed, store._c.statement() as conn:
        conn.execute(sa.text("SELECT * FROM workflow_records WHERE"))
    assert not isinstance(failed.value, SchemaMissing)


@pytest.mark.integration
def test_postgres_unreachable_raises() -> None:
    store = SQLStore("postgresql://root@127.0.0.1:1/nothing")
    try:
        with pytest.raises(sa.exc.OperationalError):
            store.lookup("run-1")
    finally:
        store.dispose()


@pytest.mark.integration
def test_postgres_connections_closed_by_the_server_are_replaced_before_use(
    pg_url: str, pg_server: PostgresServer
) -> None:
    store = SQLStore(pg_url)
    try:
        store.insert_run(rec("run-k", foreign_id="killed"), [msg("run-k")])
        run_threads(3, lambda i: store.lookup("run-k"))  # several pooled connections
        store.claim("run-k.1", "run-k", None, "t", T0, T0)  # and one in the pool for claims
        database = sa.make_url(pg_url).database
        assert database is not None
        assert pg_server.terminate_connections(database) >= 2
        # Not one statement is sent on a closed connection: no error, nothing run twice.
        for _ in range(3):
            assert store.lookup("run-k").foreign_id == "killed"
            assert store.claim("run-k.1", "run-k", None, "t", T0, T0).record is not None
    finally:
        store.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["lookup", "claim", "update_run", "insert_run"])
def test_a_connection_lost_mid_statement_is_a_documented_error(
    pg_url: str, pg_server: PostgresServer, operation: str
) -> None:
    # An engine of the caller's is used as it is, without the check that replaces closed connections.
    # claim, update_run and insert_run go to psycopg's cursor directly, lookup through SQLAlchemy.
    store = SQLStore(sa.create_engine(pg_url))
    run = f"run-lost-{operation}"
    calls: dict[str, Callable[[], object]] = {
        "lookup": lambda: store.lookup(run),
        "claim": lambda: store.claim(f"{run}.1", run, None, "t", T0, T0),
        "update_run": lambda: store.update_run(rec(run, foreign_id=run, version=2), 1, []),
        "insert_run": lambda: store.insert_run(rec(f"{run}-2", foreign_id=f"{run}-2"), []),
    }
    try:
        store.insert_run(rec(run, foreign_id=run), [msg(run)])
        store.claim(f"{run}.1", run, None, "t", T0, T0)  # a connection in the claims pool too
        database = sa.make_url(pg_url).database
        assert database is not None
        assert pg_server.terminate_connections(database) >= 2
        with pytest.raises(DatabaseConnectionLost, match="may or may not have been committed") as lost:
            calls[operation]()
        assert isinstance(lost.value.__cause__, sa.exc.DBAPIError)
        assert lost.value.__cause__.connection_invalidated
        calls[operation]()  # the pool reconnected
    finally:
        store.dispose()


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_share_connections(sql_backend: Backend, tmp_path: Any) -> None:
    store = sql_backend.store
    assert isinstance(store, SQLStore)
    store.insert_run(rec(), [])

    def backend_pid() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    parent_pid = backend_pid() if sql_backend.name == "postgres" else 0  # the parent now holds a pooled connection
    report = tmp_path / "child.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            ok = store.lookup("run-1").run_id == "run-1"
            store.record_error("run-1", 1, err("from child"))
            report.write_text(str(backend_pid() if sql_backend.name == "postgres" else 0))
            # A child shutting down closes its pool; that must not close the parent's connections.
            store.dispose()
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    if sql_backend.name == "postgres":
        assert int(report.read_text()) != parent_pid
        assert backend_pid() == parent_pid
    assert store.lookup("run-1").run_id == "run-1"
    assert store.errors("run-1")[0].last_error.message == "from child"


@pytest.mark.integration
def test_a_lost_connection_retires_every_older_pooled_connection(pg_url: str, pg_server: PostgresServer) -> None:
    # After a restart or a failover every pooled connection is dead: one failed call, not one per connection.
    store = SQLStore(sa.create_engine(pg_url, pool_size=5))
    try:
        held = [store.engine.execution_options(isolation_level="AUTOCOMMIT").connect() for _ in range(5)]
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
        for conn in held:
            conn.close()
        database = sa.make_url(pg_url).database
        assert database is not None
        assert pg_server.terminate_connections(database) >= 5
        failures = 0
        for i in range(6):
            try:
                store.insert_run(rec(f"run-retire-{i}", foreign_id=f"retire-{i}"), [])
            except DatabaseConnectionLost:
                failures += 1
        assert failures == 1
    finally:
        store.dispose()


@pytest.mark.integration
def test_statement_events_and_echo_see_every_write(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: seen.append(statement))
    store = SQLStore(engine)
    try:
        store.insert_run(rec("run-events", foreign_id="events"), [msg("run-events")])
        store.claim("run-events.1", "run-events", None, "t", T0, T0 + HOUR)
        assert store.update_run(rec("run-events", foreign_id="events", version=2), 1, [])
        assert any("INSERT INTO workflow_records" in s for s in seen)
        assert any("UPDATE workflow_records" in s for s in seen)
    finally:
        store.dispose()
