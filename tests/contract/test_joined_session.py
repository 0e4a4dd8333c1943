"""SQLStore.joined: a run written in the caller's SQLAlchemy session, committed or rolled back with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from examples.order_processing import Order, OrderStatus
from tests.contract.callers import app_orders, order_id
from tests.contract.conftest import PostgresServer
from workflow_celery import (
    ConfigurationError,
    InProcessBroker,
    RecordNotFound,
    RunState,
    SQLStore,
    Workflow,
    WorkflowInProgress,
)

pytestmark = pytest.mark.integration

ORDERS = sa.table("app_orders", sa.column("id", sa.Text))


@pytest.fixture(scope="module")
def joined_url(pg_server: PostgresServer) -> str:
    """A database of this module's own: the application's table must not show in the other tests' schema."""
    return pg_server.create_database("wfc_contract_joined")


@pytest.fixture
def store(joined_url: str) -> Iterator[SQLStore]:
    s = SQLStore(joined_url)
    s.create_schema()
    with s.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS app_orders (id text PRIMARY KEY)"))
    yield s
    s.dispose()


def test_a_run_triggered_in_a_session_commits_with_it_and_is_published_after(
    store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus], joined_url: str
) -> None:
    oid = order_id()
    other = SQLStore(joined_url)  # another process' view: only committed rows
    try:
        with Session(store.engine) as session, session.begin():
            session.execute(ORDERS.insert().values(id=oid))
            with store.joined(session):
                run_id = wf.trigger(oid, initial_value=Order(id=oid, items=["book"], total=12.5))
                assert wf.lookup(run_id).status is OrderStatus.CREATED  # the session sees its own run
            with pytest.raises(RecordNotFound):
                other.lookup(run_id)
            assert broker.published == 0
        assert broker.published == 1
        assert other.lookup(run_id).foreign_id == oid and app_orders(store, oid) == 1
        broker.drain()
        assert wf.lookup(run_id).status is OrderStatus.FULFILLED
    finally:
        other.dispose()


def test_a_rollback_leaves_no_run_no_order_and_no_message(
    store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    run_ids: list[str] = []
    with pytest.raises(RuntimeError, match="the view failed"), Session(store.engine) as session, session.begin():
        session.execute(ORDERS.insert().values(id=oid))
        with store.joined(session):
            run_ids.append(wf.trigger(oid, initial_value=Order(id=oid, items=["book"], total=12.5)))
        raise RuntimeError("the view failed")
    assert broker.published == 0 and app_orders(store, oid) == 0
    with pytest.raises(RecordNotFound):
        store.lookup(run_ids[0])
    assert store.outbox(run_ids[0]) == []
    # Nothing is left behind for the foreign id either.
    assert wf.lookup(wf.trigger(oid)).foreign_id == oid


def test_a_refused_trigger_leaves_the_sessions_transaction_usable(
    store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    oid = order_id()
    with Session(store.engine) as session, session.begin():
        with store.joined(session):
            first = wf.trigger(oid)
            with pytest.raises(WorkflowInProgress) as refused:
                wf.trigger(oid)
            assert refused.value.context["run_id"] == first
        session.execute(ORDERS.insert().values(id=oid))  # PostgreSQL did not abort the transaction
    assert app_orders(store, oid) == 1 and store.lookup(first).foreign_id == oid
    assert broker.published == 1


def test_run_control_in_a_session(store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]) -> None:
    oid = order_id()
    run_id = wf.trigger(oid, initial_value=Order(id=oid, items=["book"], total=12.5))
    assert broker.published == 1
    with pytest.raises(RuntimeError), Session(store.engine) as session, session.begin():
        with store.joined(session):
            wf.pause(run_id, "checking")
            assert wf.lookup(run_id).run_state is RunState.PAUSED
        raise RuntimeError("rolled back")
    assert store.lookup(run_id).run_state is RunState.INITIATED
    with Session(store.engine) as session, session.begin(), store.joined(session):
        wf.pause(run_id, "checking")
    assert store.lookup(run_id).run_state is RunState.PAUSED
    with Session(store.engine) as session, session.begin(), store.joined(session):
        wf.resume(run_id)
        assert broker.published == 1  # the resumed step's message waits for the commit
    assert broker.published == 2
    broker.drain()
    assert wf.lookup(run_id).status is OrderStatus.FULFILLED


def test_a_savepoint_of_the_callers_rolled_back_takes_its_messages_along(
    store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus]
) -> None:
    kept, undone = order_id(), order_id()
    with Session(store.engine) as session, session.begin(), store.joined(session):
        wf.trigger(kept)
        with pytest.raises(RuntimeError), session.begin_nested():
            wf.trigger(undone)
            raise RuntimeError("undo this part")
    assert broker.published == 1
    assert store.latest("order-processing", kept).foreign_id == kept
    with pytest.raises(RecordNotFound):
        store.latest("order-processing", undone)


def test_what_cannot_be_joined_is_refused(store: SQLStore, joined_url: str, tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="takes a SQLAlchemy Session"), store.joined(object()):  # type: ignore[arg-type]
        pass
    elsewhere = sa.create_engine(sa.make_url(joined_url).set(database="postgres"))
    try:
        with (
            Session(elsewhere) as session,
            pytest.raises(ConfigurationError, match="another database"),
            store.joined(session),
        ):
            pass
    finally:
        elsewhere.dispose()
    sqlite = SQLStore(f"sqlite:///{tmp_path}/joined.db")
    with (
        Session(sqlite.engine) as session,
        pytest.raises(ConfigurationError, match="needs PostgreSQL"),
        sqlite.joined(session),
    ):
        pass


def test_the_same_database_under_another_url_joins(
    store: SQLStore, broker: InProcessBroker, wf: Workflow[Order, OrderStatus], joined_url: str
) -> None:
    url = sa.make_url(joined_url)
    # localhost for 127.0.0.1, and the default port left out: the same database.
    other = url.set(host="localhost", port=None) if url.host == "127.0.0.1" else url.set(port=None)
    engine = sa.create_engine(other)
    oid = order_id()
    try:
        with Session(engine) as session, session.begin(), store.joined(session):
            session.execute(ORDERS.insert().values(id=oid))
            run_id = wf.trigger(oid)
        assert store.lookup(run_id).foreign_id == oid and app_orders(store, oid) == 1
    finally:
        engine.dispose()
