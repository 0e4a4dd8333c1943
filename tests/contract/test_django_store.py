"""DjangoStore: runs written in Django's transactions, tables made by ``migrate``, the database followed.

Django is configured in this process once, on a database of this module's own.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from examples.order_processing import Order, OrderStatus
from tests.contract.callers import app_orders, order_id
from tests.contract.conftest import PostgresServer
from workflow_celery import (
    Builder,
    ConfigurationError,
    InProcessBroker,
    RecordNotFound,
    Run,
    RunState,
    SchemaMissing,
    Workflow,
    WorkflowInProgress,
)
from workflow_celery.adapters.sql import migrate

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, connections, transaction  # noqa: E402
from django.db.transaction import TransactionManagementError  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from workflow_celery.contrib.django import DjangoStore  # noqa: E402

pytestmark = pytest.mark.integration


def _django_settings(url: sa.URL) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.database,
        "USER": url.username or "",
        "HOST": url.host or "",
        "PORT": str(url.port or ""),
    }


@pytest.fixture(scope="module")
def django_db(pg_server: PostgresServer) -> Iterator[sa.URL]:
    """Django set up on a fresh database, migrated by ``manage.py migrate``'s own command."""
    url = sa.make_url(pg_server.create_database("wfc_contract_django"))
    if settings.configured:
        pytest.fail("Django was configured before this module: its tests need their own settings", pytrace=False)
    settings.configure(
        DATABASES={
            "default": _django_settings(url),
            "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.messages",
            "workflow_celery.contrib.django",
        ],
        USE_TZ=True,
        WORKFLOW_CELERY={"DATABASE": "default"},
    )
    django.setup()
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE app_orders (id text PRIMARY KEY)")
    yield url
    connections.close_all()


@pytest.fixture
def store(django_db: sa.URL) -> Iterator[DjangoStore]:
    s = DjangoStore()
    yield s
    s.dispose()


def add_order(oid: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO app_orders (id) VALUES (%s)", [oid])


def committed(store: DjangoStore, run_id: str) -> bool:
    with store.engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM workflow_records WHERE run_id = :id"), {"id": run_id}).first()
    return found is not None


def test_migrate_creates_the_tables_and_unapplying_drops_them(django_db: sa.URL) -> None:
    tables = set(connection.introspection.table_names())
    assert {"workflow_records", "workflow_history", "workflow_outbox"} <= tables
    call_command("migrate", "workflow_celery", "zero", verbosity=0)
    assert "workflow_records" not in connection.introspection.table_names()
    call_command("migrate", "workflow_celery", verbosity=0)
    assert "workflow_records" in connection.introspection.table_names()


def test_each_django_migration_reaches_its_store_revision_and_the_last_one_the_head(django_db: sa.URL) -> None:
    # An installation that applied 0001 when 0004 was the head gets 0005 from 0002, and so on.
    url = django_db.render_as_string(hide_password=False)
    call_command("migrate", "workflow_celery", "0001", verbosity=0)
    assert migrate.current(url) == "0004"
    assert "workflow_schedules" not in connection.introspection.table_names()
    call_command("migrate", "workflow_celery", verbosity=0)
    assert migrate.current(url) == migrate.head()
    assert "workflow_schedules" in connection.introspection.table_names()


def test_a_run_triggered_in_an_atomic_block_commits_with_it_and_is_published_after(
    store: DjangoStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    with transaction.atomic():
        add_order(oid)
        run_id = wf.trigger(oid, initial_value=Order(id=oid, items=["book"], total=12.5))
        assert wf.lookup(run_id).status is OrderStatus.CREATED  # read in the block: its own uncommitted run
        assert not committed(store, run_id)
        assert broker.published == 0
    assert broker.published == 1
    assert committed(store, run_id) and app_orders(store, oid) == 1
    broker.drain()
    assert wf.lookup(run_id).status is OrderStatus.FULFILLED


def test_a_block_that_raises_leaves_no_run_no_row_and_no_message(
    store: DjangoStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    run_ids: list[str] = []
    with pytest.raises(RuntimeError, match="the view failed"), transaction.atomic():
        add_order(oid)
        run_ids.append(wf.trigger(oid))
        raise RuntimeError("the view failed")
    assert broker.published == 0 and app_orders(store, oid) == 0
    with pytest.raises(RecordNotFound):
        wf.lookup(run_ids[0])
    assert store.outbox(run_ids[0]) == []
    assert wf.lookup(wf.trigger(oid)).foreign_id == oid  # nothing left behind for the foreign id


def test_a_refused_trigger_leaves_djangos_transaction_usable(
    store: DjangoStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    with transaction.atomic():
        first = wf.trigger(oid)
        with pytest.raises(WorkflowInProgress) as refused:
            wf.trigger(oid)
        assert refused.value.context["run_id"] == first
        add_order(oid)  # PostgreSQL did not abort the transaction
    assert app_orders(store, oid) == 1 and committed(store, first) and broker.published == 1


def test_a_nested_block_rolled_back_takes_its_run_and_message_along(
    store: DjangoStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    kept, undone = order_id(), order_id()
    with transaction.atomic():
        wf.trigger(kept)
        with pytest.raises(RuntimeError), transaction.atomic():
            wf.trigger(undone)
            raise RuntimeError("undo this part")
    assert broker.published == 1
    assert wf.latest(kept).foreign_id == kept
    with pytest.raises(RecordNotFound):
        wf.latest(undone)


def test_run_control_in_an_atomic_block(
    store: DjangoStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    run_id = wf.trigger(
        oid, initial_value=Order(id=oid, items=["book"], total=12.5)
    )  # outside a block: committed at once
    assert committed(store, run_id) and broker.published == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        wf.pause(run_id, "checking")
        raise RuntimeError("rolled back")
    assert wf.lookup(run_id).run_state is RunState.INITIATED
    with transaction.atomic():
        wf.pause(run_id, "checking")
    with transaction.atomic():
        wf.resume(run_id)
        assert broker.published == 1  # the resumed step's message waits for the commit
    assert broker.published == 2
    broker.drain()
    assert wf.lookup(run_id).status is OrderStatus.FULFILLED


def test_a_write_in_a_block_marked_for_rollback_is_refused_as_djangos_own_queries_are(
    store: DjangoStore, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    with transaction.atomic():
        transaction.set_rollback(True)  # what Django does when an ORM write fails inside the block
        with pytest.raises(TransactionManagementError):
            wf.trigger(oid)
    with transaction.atomic():
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM app_orders")
        with pytest.raises(sa.exc.InternalError, match="current transaction is aborted"):
            wf.trigger(oid)
        transaction.set_rollback(True)
    with pytest.raises(RecordNotFound):
        wf.latest(oid)


def test_times_read_in_a_block_are_utc_whatever_djangos_time_zone(
    store: DjangoStore, wf: Workflow[Order, OrderStatus]
) -> None:
    with override_settings(USE_TZ=False, TIME_ZONE="America/New_York"):
        connection.close()  # Django sets the session's time zone when it connects
        try:
            with transaction.atomic():
                run = wf.lookup(wf.trigger(order_id()))
                assert abs(run.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        finally:
            connection.close()


def test_the_store_follows_the_database_djangos_settings_name(
    store: DjangoStore, wf: Workflow[Order, OrderStatus], pg_server: PostgresServer, django_db: sa.URL
) -> None:
    before = wf.trigger(order_id())  # a pooled connection to the first database
    second = sa.make_url(pg_server.create_database("wfc_contract_django_test"))
    connection.close()
    connection.settings_dict["NAME"] = second.database  # what Django's test runner does
    try:
        call_command("migrate", verbosity=0)
        moved = wf.trigger(order_id())
        engine = sa.create_engine(second)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM workflow_records")).scalar_one() == 1
        engine.dispose()
        with pytest.raises(RecordNotFound):
            wf.lookup(before)
        assert wf.lookup(moved).run_id == moved
    finally:
        connection.close()
        connection.settings_dict["NAME"] = django_db.database
        store.dispose()
    assert wf.lookup(before).run_id == before


class Ticket(enum.IntEnum):
    UNKNOWN = 0
    WAITING = 1
    ANSWERED = 2
    CLOSED = 3


@dataclass
class Question:
    text: str = ""


def refuse(run: Run[Question, Ticket], payload: bytes) -> Ticket:
    raise ValueError(f"the payload {payload!r} is refused")


def close(run: Run[Question, Ticket]) -> Ticket:
    return Ticket.CLOSED


def tickets(store: DjangoStore, broker: InProcessBroker) -> Workflow[Question, Ticket]:
    b = Builder(f"tickets-{uuid.uuid4().hex[:6]}", Question, Ticket)
    b.add_callback(Ticket.WAITING, refuse, Ticket.ANSWERED)
    b.add_step(Ticket.ANSWERED, close, Ticket.CLOSED)
    return b.build(broker, store, pause_after_err_count=2)


def test_a_callback_failing_in_an_atomic_block_is_counted_and_pauses_the_run(
    store: DjangoStore, broker: InProcessBroker
) -> None:
    wf = tickets(store, broker)
    oid = order_id()
    run_id = wf.trigger(oid, start_at=Ticket.WAITING)
    for attempt in (1, 2):
        with pytest.raises(ValueError, match="refused"), transaction.atomic():
            add_order(f"{oid}-{attempt}")
            wf.callback(oid, Ticket.WAITING, b"no")
        # The block rolled back the view's own row, not the count of the failure.
        assert app_orders(store, f"{oid}-{attempt}") == 0
        assert [e.count for e in wf.errors(run_id)] == [attempt]
    assert wf.lookup(run_id).run_state is RunState.PAUSED


def test_a_failure_that_cannot_be_counted_beside_the_block_still_raises_the_callbacks_error(
    store: DjangoStore, broker: InProcessBroker, caplog: pytest.LogCaptureFixture
) -> None:
    wf = tickets(store, broker)
    oid = order_id()
    run_id = wf.trigger(oid, start_at=Ticket.WAITING)
    with pytest.raises(ValueError, match="refused"):
        wf.callback(oid, Ticket.WAITING, b"no")  # counted: the run's error counter row exists
    with transaction.atomic():
        wf.pause(run_id, "checking")
        wf.resume(run_id)  # resets the counter in the block, which now holds its row
        with pytest.raises(ValueError, match="refused"):
            wf.callback(oid, Ticket.WAITING, b"no")  # counting beside the block waits, then gives up
        transaction.set_rollback(True)
    assert "could not count the failed callback" in caplog.text and "lock timeout" in caplog.text
    assert wf.lookup(run_id).run_state is RunState.INITIATED
    assert [e.count for e in wf.errors(run_id)] == [1]


def test_a_django_test_that_did_not_declare_the_database_is_refused_as_djangos_queries_are(
    wf: Workflow[Order, OrderStatus],
) -> None:
    from django.test import SimpleTestCase
    from django.test.testcases import DatabaseOperationForbidden

    class WithoutTheDatabase(SimpleTestCase):  # type: ignore[misc]  # databases = set(): no query allowed
        def runTest(self) -> None: ...

    WithoutTheDatabase._add_databases_failures()
    try:
        with pytest.raises(DatabaseOperationForbidden, match="Database connections to 'default' are not allowed"):
            wf.trigger(order_id())
    finally:
        WithoutTheDatabase._remove_databases_failures()
    assert wf.lookup(wf.trigger(order_id())).run_state is RunState.INITIATED


def test_a_runs_admin_page_shows_the_newest_versions_of_a_long_history(
    wf: Workflow[Order, OrderStatus],
) -> None:
    from django.contrib import admin

    from workflow_celery.contrib.django.admin import RunAdmin
    from workflow_celery.contrib.django.models import Run as RunRow

    run_id = wf.trigger(order_id())
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workflow_history (run_id, version, status, run_state, object, reason, created_at) "
            "SELECT run_id, v, status, run_state, object, 'again', created_at + v * interval '1 second' "
            "FROM workflow_history, generate_series(2, 151) AS v WHERE run_id = %s",
            [run_id],
        )
    page = RunAdmin(RunRow, admin.site).history(RunRow.objects.get(pk=run_id))
    assert "The newest 100 of 151 versions." in page
    assert "<td>151</td>" in page and "<td>52</td>" in page and "<td>51</td>" not in page
    assert "<td>+1.000 s</td>" in page


def test_tables_missing_say_to_run_migrate(
    store: DjangoStore, wf: Workflow[Order, OrderStatus], django_db: sa.URL
) -> None:
    call_command("migrate", "workflow_celery", "zero", verbosity=0)
    try:
        with pytest.raises(
            SchemaMissing, match=r'run `python manage.py migrate` with "workflow_celery.contrib.django"'
        ):
            wf.trigger(order_id())
    finally:
        call_command("migrate", "workflow_celery", verbosity=0)


def test_what_is_not_a_postgresql_database_is_refused(django_db: sa.URL) -> None:
    with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
        DjangoStore("other")
    with pytest.raises(ConfigurationError, match="no database 'missing'"):
        DjangoStore("missing")
