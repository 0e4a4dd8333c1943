"""The ``RecordStore`` contract: every implementation must pass every test here."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from workflow_celery.adapters.sql import SQLStore, migrate
from workflow_celery.adapters.sql.schema import ALL_TABLES, VERSION_TABLE, metadata
from workflow_celery.core.dead_letters import DeadLetter
from workflow_celery.core.errors import DatabaseConnectionLost, RecordNotFound, SchemaMissing, WorkflowInProgress
from workflow_celery.core.ports import ErrorInfo, OutboxKind, OutboxMessage, RecordStore
from workflow_celery.core.record import Meta, Record
from workflow_celery.core.run_state import RunState

from .conftest import Backend, PostgresServer

T0 = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
T = TypeVar("T")


def rec(
    run_id: str = "run-1",
    *,
    foreign_id: str = "customer-1",
    workflow: str = "onboarding",
    run_state: RunState = RunState.RUNNING,
    status: int = 1,
    version: int = 1,
    obj: bytes = b'{"name":"Zo\xc3\xab","tags":["a","b"],"n":1}',
    created_at: datetime = T0,
    updated_at: datetime | None = None,
    reason: str = "",
) -> Record:
    return Record(
        workflow_name=workflow,
        foreign_id=foreign_id,
        run_id=run_id,
        run_state=run_state,
        status=status,
        object=obj,
        created_at=created_at,
        updated_at=updated_at or created_at,
        meta=Meta(version=version, run_state_reason=reason, status_description=f"S{status}", trace_origin="t.py:1"),
    )


def moved(record: Record, *, status: int | None = None, run_state: RunState | None = None, reason: str = "") -> Record:
    """The record's next version, one second later."""
    version = record.meta.version + 1
    return replace(
        record,
        status=record.status if status is None else status,
        run_state=record.run_state if run_state is None else run_state,
        updated_at=record.updated_at + SECOND,
        meta=Meta(version=version, run_state_reason=reason, status_description=f"S{status}"),
    )


def msg(
    record: Record | str,
    *,
    kind: OutboxKind = "step",
    id: str | None = None,
    due_at: datetime = T0,
    created_at: datetime = T0,
    attempts: int = 0,
    body: dict[str, Any] | None = None,
) -> OutboxMessage:
    run_id = record if isinstance(record, str) else record.run_id
    version = 1 if isinstance(record, str) else record.meta.version
    return OutboxMessage(
        id=id or f"{run_id}.{version}",
        workflow_name="onboarding",
        run_id=run_id,
        kind=kind,
        queue="workflow.onboarding",
        task="workflow_celery.step",
        body=body if body is not None else {"run_id": run_id, "version": version, "nested": {"x": [1, 2.5, None]}},
        created_at=created_at,
        due_at=due_at,
        attempts=attempts,
    )


def err(message: str = "boom", at: datetime = T0) -> ErrorInfo:
    return ErrorInfo(
        error_type="ValueError", message=message, traceback="Traceback ...\nValueError: boom", occurred_at=at
    )


def ids(messages: Sequence[OutboxMessage]) -> list[str]:
    return [m.id for m in messages]


def run_threads(count: int, target: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``target(i)`` in ``count`` threads released together; their results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("did not run")] * count

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results


# --------------------------------------------------------------------------- schema


def test_create_schema_is_idempotent_and_keeps_data(store: RecordStore) -> None:
    store.insert_run(rec(), [msg(rec())])
    store.create_schema()
    store.create_schema()
    assert store.lookup("run-1") == rec()
    assert ids(store.outbox()) == ["run-1.1"]


def test_migrations_reach_head_and_match_schema_module(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    assert migrate.current(sql_backend.url) == migrate.head() == "0004"
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
def test_concurrent_create_schema_on_sqlite(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    stores = [SQLStore(url) for _ in range(4)]
    try:
        assert run_threads(4, lambda i: stores[i].create_schema()) == [None] * 4
        assert migrate.current(url) == migrate.head()
    finally:
        for s in stores:
            s.dispose()


# --------------------------------------------------------------------------- insert and read


def test_round_trip_of_every_field(store: RecordStore) -> None:
    zone = timezone(timedelta(hours=5, minutes=30))
    record = Record(
        workflow_name="onboarding",
        foreign_id="customer/ü 1",
        run_id="0190a3c2-7b1e-7cc0-9d1f-1a2b3c4d5e6f",
        run_state=RunState.PAUSED,
        status=7,
        object='{"emoji":"\U0001f600","quote":"\\"","n":12345678901234567890}'.encode(),
        created_at=datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=zone),
        updated_at=datetime(2024, 1, 2, 3, 4, 6, 1, tzinfo=zone),
        meta=Meta(version=3, run_state_reason="waiting for KYC", status_description="Verify", trace_origin="x.py:42"),
    )
    store.insert_run(record, [])
    got = store.lookup(record.run_id)
    assert got == record
    assert isinstance(got.object, bytes) and got.object == record.object
    assert got.run_state is RunState.PAUSED
    for stamp in (got.created_at, got.updated_at):
        assert stamp.tzinfo is not None and stamp.utcoffset() is not None
    assert got.created_at == datetime(2024, 1, 1, 21, 34, 5, 678901, tzinfo=UTC)
    assert store.latest("onboarding", "customer/ü 1") == record


def test_sql_returns_utc(sql_backend: Backend) -> None:
    zone = timezone(timedelta(hours=-7))
    record = rec(created_at=T0.astimezone(zone))
    sql_backend.store.insert_run(record, [msg(record, due_at=T0.astimezone(zone))])
    got = sql_backend.store.lookup("run-1")
    assert got.created_at.utcoffset() == timedelta(0) and got.created_at == T0
    assert sql_backend.store.outbox()[0].due_at.utcoffset() == timedelta(0)
    assert sql_backend.store.history("run-1")[0].created_at.utcoffset() == timedelta(0)


def test_lookup_and_latest_raise_record_not_found(store: RecordStore) -> None:
    with pytest.raises(RecordNotFound) as info:
        store.lookup("nope")
    assert info.value.context["run_id"] == "nope"
    with pytest.raises(RecordNotFound):
        store.latest("onboarding", "nobody")
    store.insert_run(rec(), [])
    with pytest.raises(RecordNotFound):
        store.latest("other-workflow", "customer-1")
    with pytest.raises(RecordNotFound):
        store.latest("onboarding", "customer-2")


def test_insert_writes_first_history_row_and_doorbells(store: RecordStore) -> None:
    record = rec(reason="why not", updated_at=T0 + SECOND)
    step = msg(record)
    hook = msg(record, kind="hook", id="run-1.hook.a", created_at=T0 + SECOND, body={"event": "created"})
    store.insert_run(record, [hook, step])
    (entry,) = store.history("run-1")
    assert (entry.run_id, entry.version, entry.status, entry.run_state) == ("run-1", 1, 1, RunState.RUNNING)
    assert (entry.object, entry.reason, entry.created_at) == (record.object, "why not", T0 + SECOND)
    assert store.outbox("run-1") == [step, hook]
    assert store.outbox() == [step, hook]
    assert store.outbox("run-2") == []
    assert store.history("run-2") == []


def test_second_in_progress_run_for_a_foreign_id_is_refused(store: RecordStore) -> None:
    first = rec("run-1")
    store.insert_run(first, [msg(first)])
    second = rec("run-2", created_at=T0 + SECOND)
    for state in (RunState.INITIATED, RunState.RUNNING, RunState.PAUSED):
        with pytest.raises(WorkflowInProgress) as info:
            store.insert_run(replace(second, run_state=state), [msg(second)])
        assert info.value.context == {"workflow": "onboarding", "foreign_id": "customer-1", "run_id": "run-1"}
    # Nothing of the refused run was written.
    with pytest.raises(RecordNotFound):
        store.lookup("run-2")
    assert store.history("run-2") == []
    assert ids(store.outbox()) == ["run-1.1"]
    # Other foreign ids and other workflows are independent.
    store.insert_run(rec("run-3", foreign_id="customer-2"), [])
    store.insert_run(rec("run-4", workflow="billing"), [])
    assert store.lookup("run-4").workflow_name == "billing"


@pytest.mark.parametrize("final", [RunState.COMPLETED, RunState.CANCELLED], ids=lambda s: s.name.lower())
def test_new_run_allowed_once_the_previous_one_finished(store: RecordStore, final: RunState) -> None:
    first = rec("run-1")
    store.insert_run(first, [])
    assert store.update_run(moved(first, run_state=final), 1, [])
    second = rec("run-2", created_at=T0 + SECOND)
    store.insert_run(second, [])
    assert store.latest("onboarding", "customer-1") == second
    # And the second now blocks a third.
    with pytest.raises(WorkflowInProgress) as info:
        store.insert_run(rec("run-3", created_at=T0 + 2 * SECOND), [])
    assert info.value.context["run_id"] == "run-2"


def test_finished_runs_do_not_block_and_are_not_blocked(store: RecordStore) -> None:
    store.insert_run(rec("run-1"), [])
    # A run inserted already finished takes no in-progress slot.
    store.insert_run(rec("run-2", run_state=RunState.COMPLETED, created_at=T0 + SECOND), [])
    store.insert_run(rec("run-3", run_state=RunState.DATA_DELETED, created_at=T0 + 2 * SECOND), [])
    assert [r.run_id for r in store.list_runs("onboarding", order="asc")] == ["run-1", "run-2", "run-3"]


def test_duplicate_run_id_is_rejected(store: RecordStore) -> None:
    done = rec("run-1", run_state=RunState.COMPLETED)
    store.insert_run(done, [])
    with pytest.raises(ValueError):
        store.insert_run(replace(done, foreign_id="customer-9"), [])
    assert store.lookup("run-1") == done
    assert len(store.history("run-1")) == 1


def test_concurrent_inserts_for_one_foreign_id_admit_exactly_one(backend: Backend) -> None:
    stores = [backend.open() for _ in range(8)]
    results = run_threads(
        8, lambda i: stores[i].insert_run(rec(f"run-{i}", created_at=T0 + i * SECOND), [msg(f"run-{i}")])
    )
    winners = [i for i, r in enumerate(results) if r is None]
    losers = [r for r in results if r is not None]
    assert len(winners) == 1, results
    assert all(isinstance(r, WorkflowInProgress) for r in losers), losers
    winner = f"run-{winners[0]}"
    assert all(r.context["run_id"] == winner for r in losers if isinstance(r, WorkflowInProgress))
    assert [r.run_id for r in backend.store.list_runs("onboarding")] == [winner]
    assert ids(backend.store.outbox()) == [f"{winner}.1"]


def test_latest_is_the_newest_by_creation_time(store: RecordStore) -> None:
    runs = [rec(f"run-{i}", created_at=T0 + i * SECOND, run_state=RunState.COMPLETED) for i in range(3)]
    for r in runs:
        store.insert_run(r, [])
    store.insert_run(rec("run-x", foreign_id="customer-2", created_at=T0 + 10 * SECOND), [])
    store.insert_run(rec("run-y", workflow="billing", created_at=T0 + 10 * SECOND), [])
    assert store.latest("onboarding", "customer-1") == runs[2]


# --------------------------------------------------------------------------- update_run


def test_update_run_compare_and_set(store: RecordStore) -> None:
    v1 = rec()
    store.insert_run(v1, [msg(v1)])
    v2 = moved(v1, status=2)
    assert store.update_run(v2, 1, [msg(v2)]) is True
    assert store.lookup("run-1") == v2

    stale = moved(v1, status=9)
    store.record_error("run-1", 2, err())
    assert store.update_run(stale, 1, [msg(stale, id="stale.1"), msg(stale, kind="hook", id="stale.h")]) is False
    # A lost compare-and-set writes nothing at all.
    assert store.lookup("run-1") == v2
    assert [h.version for h in store.history("run-1")] == [1, 2]
    assert ids(store.outbox()) == ["run-1.2"]
    assert [e.status for e in store.errors("run-1")] == [2]

    assert store.update_run(moved(v2), 7, []) is False
    assert store.update_run(rec("ghost", version=2), 1, [msg("ghost")]) is False
    assert store.history("ghost") == [] and store.outbox("ghost") == []


def test_history_has_every_version(store: RecordStore) -> None:
    current = rec()
    store.insert_run(current, [])
    for status in (2, 3, 4):
        nxt = moved(current, status=status, reason=f"to {status}")
        assert store.update_run(nxt, current.meta.version, [])
        current = nxt
    history = store.history("run-1")
    assert [h.version for h in history] == [1, 2, 3, 4]
    assert [h.status for h in history] == [1, 2, 3, 4]
    assert [h.reason for h in history] == ["", "to 2", "to 3", "to 4"]
    assert [h.created_at for h in history] == [T0 + i * SECOND for i in range(4)]
    assert all(h.object == current.object for h in history)


def test_update_supersedes_step_doorbells_but_keeps_hooks(store: RecordStore) -> None:
    v1 = rec()
    other = rec("run-9", foreign_id="customer-9")
    store.insert_run(other, [msg(other)])
    store.insert_run(
        v1,
        [
            msg(v1),
            msg(v1, kind="step", id="run-1.retry", created_at=T0 + SECOND),
            msg(v1, kind="hook", id="run-1.hook", created_at=T0 + 2 * SECOND),
            msg(v1, kind="delete", id="run-1.delete", created_at=T0 + 3 * SECOND),
        ],
    )
    v2 = moved(v1, status=2)
    new_step = msg(v2, created_at=T0 + 4 * SECOND)
    new_hook = msg(v2, kind="hook", id="run-1.hook2", created_at=T0 + 5 * SECOND)
    assert store.update_run(v2, 1, [new_step, new_hook])
    assert ids(store.outbox("run-1")) == ["run-1.hook", "run-1.delete", "run-1.2", "run-1.hook2"]
    assert store.outbox("run-1")[2] == new_step
    assert ids(store.outbox("run-9")) == ["run-9.1"]
    # A write with no doorbells still removes the superseded one.
    v3 = moved(v2, status=3)
    assert store.update_run(v3, 2, [])
    assert ids(store.outbox("run-1")) == ["run-1.hook", "run-1.delete", "run-1.hook2"]


def test_update_upserts_doorbells_by_id(store: RecordStore) -> None:
    v1 = rec()
    store.insert_run(v1, [msg(v1, kind="hook", id="hook-a", body={"n": 1})])
    v2 = moved(v1, status=2)
    replacement = msg(v2, kind="hook", id="hook-a", body={"n": 2}, due_at=T0 + 60 * SECOND)
    # The same id twice in one write: the last one wins.
    assert store.update_run(v2, 1, [msg(v2), msg(v2, kind="hook", id="hook-a", body={"n": 0}), replacement])
    assert store.outbox("run-1") == [replacement, msg(v2)]


def test_update_may_rewrite_a_step_doorbell_with_the_same_id(store: RecordStore) -> None:
    v1 = rec()
    store.insert_run(v1, [msg(v1, id="run-1.tick", body={"n": 1}), msg(v1, id="run-1.old")])
    v2 = moved(v1, status=2)
    rewritten = msg(v2, id="run-1.tick", body={"n": 2}, due_at=T0 + 5 * SECOND)
    assert store.update_run(v2, 1, [rewritten])
    assert store.outbox("run-1") == [rewritten]


def test_update_clears_error_counters_of_other_statuses(store: RecordStore) -> None:
    v1 = rec()
    store.insert_run(v1, [])
    store.insert_run(rec("run-2", foreign_id="customer-2"), [])
    store.record_error("run-1", 1, err())
    store.record_error("run-1", 2, err())
    store.record_error("run-1", 3, err())
    store.record_error("run-2", 1, err())
    assert store.update_run(moved(v1, status=2), 1, [])
    assert [(e.status, e.count) for e in store.errors("run-1")] == [(2, 1)]
    assert [e.status for e in store.errors("run-2")] == [1]


def test_moving_back_into_progress_conflicts_with_a_newer_run(store: RecordStore) -> None:
    old = rec("run-1")
    store.insert_run(old, [])
    cancelled = moved(old, run_state=RunState.CANCELLED, reason="operator")
    assert store.update_run(cancelled, 1, [])
    store.insert_run(rec("run-2", created_at=T0 + SECOND), [])
    revived = moved(cancelled, run_state=RunState.RUNNING)
    with pytest.raises(WorkflowInProgress) as info:
        store.update_run(revived, 2, [msg(revived)])
    assert info.value.context["run_id"] == "run-2"
    assert store.lookup("run-1") == cancelled
    assert len(store.history("run-1")) == 2 and store.outbox("run-1") == []
    # Pausing and resuming the run in progress is no conflict.
    running = store.lookup("run-2")
    paused = moved(running, run_state=RunState.PAUSED, reason="hold")
    assert store.update_run(paused, 1, [])
    assert store.update_run(moved(paused, run_state=RunState.RUNNING), 2, [])


def test_concurrent_compare_and_set_has_one_winner(backend: Backend) -> None:
    v1 = rec()
    backend.store.insert_run(v1, [msg(v1)])
    stores = [backend.open() for _ in range(8)]

    def attempt(i: int) -> bool:
        nxt = moved(v1, status=10 + i)
        return stores[i].update_run(nxt, 1, [msg(nxt, id=f"run-1.2.{i}")])

    results = run_threads(8, attempt)
    assert sorted(results, key=str) == [False] * 7 + [True]
    winner = results.index(True)
    assert backend.store.lookup("run-1").status == 10 + winner
    assert [h.version for h in backend.store.history("run-1")] == [1, 2]
    assert ids(backend.store.outbox()) == [f"run-1.2.{winner}"]


# --------------------------------------------------------------------------- list_runs


def _populate(store: RecordStore) -> list[Record]:
    records = []
    for i in range(53):
        r = rec(
            f"run-{i:02d}",
            foreign_id=f"customer-{i % 5}" if i % 5 else f"solo-{i}",
            workflow="onboarding" if i % 3 else "billing",
            run_state=RunState.COMPLETED if i % 5 else RunState.RUNNING,
            status=i % 4,
            # Pairs share a creation time so the run id has to break the tie.
            created_at=T0 + (i // 2) * SECOND,
        )
        store.insert_run(r, [])
        records.append(r)
    return records


def test_list_runs_pages_in_both_orders(store: RecordStore) -> None:
    records = _populate(store)
    everything = sorted(records, key=lambda r: (r.created_at, r.run_id))
    pages = [store.list_runs(None, limit=10, offset=o, order="asc") for o in range(0, 60, 10)]
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 3]
    assert [r for p in pages for r in p] == everything
    desc = [r for o in range(0, 60, 10) for r in store.list_runs(None, limit=10, offset=o)]
    assert desc == everything[::-1]
    assert store.list_runs(None, limit=10, offset=53) == []
    assert store.list_runs(None) == everything[::-1][:25]


def test_list_runs_filters(store: RecordStore) -> None:
    records = _populate(store)

    def expect(pred: Callable[[Record], bool]) -> list[str]:
        return [r.run_id for r in sorted(records, key=lambda r: (r.created_at, r.run_id)) if pred(r)]

    def got(workflow: str | None, **kw: Any) -> list[str]:
        return [r.run_id for r in store.list_runs(workflow, limit=100, order="asc", **kw)]

    assert got("onboarding") == expect(lambda r: r.workflow_name == "onboarding")
    assert len(got("onboarding")) == 35
    assert got("onboarding", status=2) == expect(lambda r: r.workflow_name == "onboarding" and r.status == 2)
    assert got(None, run_state=RunState.RUNNING) == expect(lambda r: r.run_state is RunState.RUNNING)
    assert got("billing", foreign_id="customer-1") == expect(
        lambda r: r.workflow_name == "billing" and r.foreign_id == "customer-1"
    )
    assert got("onboarding", status=3, run_state=RunState.COMPLETED, foreign_id="customer-3") == expect(
        lambda r: (
            (r.workflow_name, r.status, r.run_state, r.foreign_id)
            == ("onboarding", 3, RunState.COMPLETED, "customer-3")
        )
    )
    assert got("nobody") == []
    page = store.list_runs("onboarding", status=1, limit=3, offset=2, order="desc")
    assert [r.run_id for r in page] == expect(lambda r: r.workflow_name == "onboarding" and r.status == 1)[::-1][2:5]


def test_count_runs_counts_every_page(store: RecordStore) -> None:
    _populate(store)
    assert store.count_runs(None) == 53 and len(store.list_runs(None)) == 25
    assert store.count_runs("onboarding") == 35
    for kw in [
        {"status": 2},
        {"run_state": RunState.RUNNING},
        {"foreign_id": "customer-1"},
        {"status": 3, "run_state": RunState.COMPLETED, "foreign_id": "customer-3"},
    ]:
        for workflow in (None, "onboarding", "billing"):
            expected = len(store.list_runs(workflow, limit=100, **kw))
            assert store.count_runs(workflow, **kw) == expected, (workflow, kw)
    assert store.count_runs("nobody") == 0
    assert store.count_runs(None, status=99) == 0


def test_runs_are_found_by_run_id_prefix(store: RecordStore) -> None:
    _populate(store)

    def got(prefix: str, workflow: str | None = None) -> list[str]:
        return [r.run_id for r in store.list_runs(workflow, run_id_prefix=prefix, limit=100, order="asc")]

    assert got("run-1") == [f"run-{i}" for i in range(10, 20)]
    assert store.count_runs(None, run_id_prefix="run-1") == 10
    assert got("run-05") == ["run-05"] and store.count_runs(None, run_id_prefix="run-05") == 1
    billing = [f"run-{i}" for i in range(10, 20) if i % 3 == 0]
    assert got("run-1", "billing") == billing and store.count_runs("billing", run_id_prefix="run-1") == len(billing)
    # The prefix is text, never a pattern.
    for pattern in ["run-%", "run-_5", "%", "_"]:
        assert got(pattern) == [] and store.count_runs(None, run_id_prefix=pattern) == 0
    assert len(got("")) == 53


# --------------------------------------------------------------------------- outbox


def test_outbox_is_ordered_by_creation_then_id(store: RecordStore) -> None:
    a, b = rec("run-a", foreign_id="a"), rec("run-b", foreign_id="b")
    store.insert_run(a, [msg(a, id="z", created_at=T0), msg(a, kind="hook", id="m", created_at=T0 + SECOND)])
    store.insert_run(b, [msg(b, id="a", created_at=T0 + SECOND), msg(b, kind="hook", id="c", created_at=T0)])
    assert ids(store.outbox()) == ["c", "z", "a", "m"]
    assert ids(store.outbox("run-a")) == ["z", "m"]


def test_outbox_of_one_queue(store: RecordStore) -> None:
    a, b = rec("run-a", foreign_id="a"), rec("run-b", foreign_id="b")
    hooks = "onboarding.hooks.completed"
    store.insert_run(a, [msg(a, id="step-a"), replace(msg(a, kind="hook", id="hook-a"), queue=hooks)])
    store.insert_run(b, [replace(msg(b, kind="hook", id="hook-b", created_at=T0 - SECOND), queue=hooks)])
    assert ids(store.outbox(queue=hooks)) == ["hook-b", "hook-a"]
    assert ids(store.outbox("run-a", queue=hooks)) == ["hook-a"]
    assert ids(store.outbox(queue="workflow.onboarding")) == ["step-a"]
    assert store.outbox(queue="onboarding.hooks.paused") == []


def test_claim_takes_due_rows_and_backs_off(store: RecordStore) -> None:
    r = rec()
    due_now = msg(r, id="due-now", due_at=T0)
    due_before = msg(r, kind="hook", id="due-before", due_at=T0 - 5 * SECOND, attempts=2)
    later = msg(r, kind="hook", id="later", due_at=T0 + SECOND)
    store.insert_run(r, [due_now, due_before, later])
    claimed = store.claim_due_outbox(T0, limit=10, redeliver_after=10 * SECOND, max_interval=timedelta(hours=1))
    # Oldest due first, returned as they were before the claim.
    assert claimed == [due_before, due_now]
    by_id = {m.id: m for m in store.outbox()}
    assert (by_id["due-now"].due_at, by_id["due-now"].attempts) == (T0 + 10 * SECOND, 1)
    assert (by_id["due-before"].due_at, by_id["due-before"].attempts) == (T0 + 40 * SECOND, 3)
    assert by_id["later"] == later
    # Nothing more is due in the same period.
    assert store.claim_due_outbox(T0, limit=10, redeliver_after=10 * SECOND, max_interval=timedelta(hours=1)) == []
    assert store.claim_due_outbox(T0, limit=0, redeliver_after=SECOND, max_interval=SECOND) == []


def test_claim_backoff_doubles_up_to_the_cap(store: RecordStore) -> None:
    r = rec()
    store.insert_run(r, [msg(r, due_at=T0)])
    now = T0
    waits = []
    for attempt in range(6):
        (claimed,) = store.claim_due_outbox(now, limit=5, redeliver_after=SECOND, max_interval=5 * SECOND)
        assert claimed.attempts == attempt
        (row,) = store.outbox()
        assert row.attempts == attempt + 1
        waits.append((row.due_at - now) / SECOND)
        assert (
            store.claim_due_outbox(
                row.due_at - timedelta(microseconds=1), limit=5, redeliver_after=SECOND, max_interval=5 * SECOND
            )
            == []
        )
        now = row.due_at
    assert waits == [1, 2, 4, 5, 5, 5]


def test_claim_backoff_survives_many_attempts(backend: Backend) -> None:
    r = rec()
    store = backend.store
    store.insert_run(r, [msg(r, kind="hook", id="stuck", attempts=60)])
    (claimed,) = store.claim_due_outbox(T0, limit=1, redeliver_after=SECOND, max_interval=timedelta(minutes=5))
    assert claimed.attempts == 60
    (row,) = store.outbox()
    assert (row.due_at, row.attempts) == (T0 + timedelta(minutes=5), 61)


def test_claim_respects_the_limit_in_due_order(store: RecordStore) -> None:
    r = rec()
    rows = [msg(r, kind="hook", id=f"m{i:02d}", due_at=T0 - (20 - i) * SECOND) for i in range(20)]
    store.insert_run(r, rows[::-1])
    first = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
    second = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
    third = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
    assert ids(first) == ids(rows[:7]) and ids(second) == ids(rows[7:14]) and ids(third) == ids(rows[14:])


def test_concurrent_claimers_never_share_a_row(backend: Backend) -> None:
    r = rec()
    rows = [msg(r, kind="hook", id=f"m{i:03d}", due_at=T0 - i * timedelta(milliseconds=1)) for i in range(300)]
    backend.store.insert_run(r, rows)
    stores = [backend.open() for _ in range(4)]

    def drain(i: int) -> list[str]:
        got: list[str] = []
        while batch := stores[i].claim_due_outbox(T0, limit=5, redeliver_after=SECOND, max_interval=SECOND):
            got.extend(ids(batch))
        return got

    results = run_threads(4, drain)
    claimed: list[str] = []
    for result in results:
        assert isinstance(result, list), result
        claimed.extend(result)
    assert len(claimed) == len(set(claimed)) == 300
    assert all(m.attempts == 1 for m in backend.store.outbox())


def test_delete_outbox(store: RecordStore) -> None:
    r = rec()
    store.insert_run(r, [msg(r, kind="hook", id=f"h{i}") for i in range(4)])
    store.delete_outbox(["h1", "h3", "unknown"])
    assert ids(store.outbox()) == ["h0", "h2"]
    store.delete_outbox([])
    assert ids(store.outbox()) == ["h0", "h2"]


# --------------------------------------------------------------------------- claims


def test_claim_reads_the_run_and_takes_the_doorbell(store: RecordStore) -> None:
    r = rec()
    bell = msg(r)
    store.insert_run(r, [bell])
    claim = store.claim(bell.id, "run-1", 1, "token-a", T0, T0 + MINUTE)
    assert claim.claimed and not claim.abandoned and claim.failures == 0
    assert claim.record == store.lookup("run-1")
    assert claim.doorbell == replace(bell, claimed_until=T0 + MINUTE)
    assert store.outbox() == [replace(bell, claimed_until=T0 + MINUTE)]
    # Nobody else takes it while the claim lasts, and the relay leaves it alone.
    busy = store.claim(bell.id, "run-1", 1, "token-b", T0 + SECOND, T0 + HOUR)
    assert not busy.claimed and busy.doorbell is not None and busy.doorbell.claimed_until == T0 + MINUTE
    assert store.claim_due_outbox(T0 + SECOND, limit=5, redeliver_after=SECOND, max_interval=SECOND) == []
    # An expired claim that was never released is an abandoned attempt.
    late = store.claim(bell.id, "run-1", 1, "token-c", T0 + MINUTE, T0 + 2 * MINUTE)
    assert late.claimed and late.abandoned


def test_claim_refuses_other_versions_missing_rows_and_unknown_runs(store: RecordStore) -> None:
    r = rec()
    bell = msg(r)
    store.insert_run(r, [bell])
    stale = store.claim(bell.id, "run-1", 2, "t", T0, T0 + MINUTE)
    assert not stale.claimed and stale.record == store.lookup("run-1") and stale.doorbell == bell
    missing = store.claim("run-1.7", "run-1", 1, "t", T0, T0 + MINUTE)
    assert not missing.claimed and missing.doorbell is None and missing.record is not None
    unknown = store.claim("nobody.1", "nobody", 1, "t", T0, T0 + MINUTE)
    assert unknown.record is None and unknown.doorbell is None and not unknown.claimed
    any_version = store.claim(bell.id, "run-1", None, "t", T0, T0 + MINUTE)  # hooks do not check the version
    assert any_version.claimed


def test_claim_takes_only_the_next_attempt(store: RecordStore) -> None:
    r = rec()
    bell = msg(r)
    store.insert_run(r, [bell])
    assert not store.claim(bell.id, "run-1", 1, "t", T0, T0 + MINUTE, attempt=2).claimed
    assert store.claim(bell.id, "run-1", 1, "t", T0, T0 + MINUTE, attempt=1).claimed
    assert store.record_failure(bell.id, "t", "run-1", 1, err(), due_at=T0 + SECOND, retries=1) == 1
    # A late copy of the first attempt cannot skip the backoff of the second.
    assert not store.claim(bell.id, "run-1", 1, "u", T0, T0 + MINUTE, attempt=1).claimed
    assert store.claim(bell.id, "run-1", 1, "u", T0, T0 + MINUTE, attempt=2).claimed


def test_release_claim_only_by_its_holder(store: RecordStore) -> None:
    r = rec()
    bell = msg(r, due_at=T0 + MINUTE)
    store.insert_run(r, [bell])
    assert store.claim(bell.id, "run-1", 1, "mine", T0, T0 + HOUR).claimed
    assert store.release_claim(bell.id, "not-mine") is False
    assert store.release_claim(bell.id, "mine", due_at=T0 + SECOND) is True
    assert store.outbox() == [replace(bell, due_at=T0 + SECOND)]
    assert store.release_claim(bell.id, "mine") is False  # already let go
    again = store.claim(bell.id, "run-1", 1, "next", T0, T0 + HOUR)
    assert again.claimed and not again.abandoned  # a released claim is not an abandoned attempt
    assert store.release_claim(bell.id, "next")
    assert store.outbox() == [replace(bell, due_at=T0 + SECOND)]


def test_renew_claims_extends_claims_and_slots_never_shortens(store: RecordStore) -> None:
    r = rec()
    held, free = msg(r, kind="hook", id="held"), msg(r, kind="hook", id="free")
    store.insert_run(r, [held, free])
    assert store.claim("held", "run-1", None, "t", T0, T0 + MINUTE).claimed
    assert store.acquire_slot("wf", 1, 1, "held", T0, T0 + MINUTE)
    store.renew_claims(["held", "free", "unknown"], T0 + HOUR)
    by_id = {m.id: m for m in store.outbox()}
    assert by_id["held"].claimed_until == T0 + HOUR and by_id["free"].claimed_until is None
    store.renew_claims(["held"], T0 + 2 * MINUTE)
    assert {m.id: m for m in store.outbox()}["held"].claimed_until == T0 + HOUR
    assert not store.acquire_slot("wf", 1, 1, "other", T0 + 30 * MINUTE, T0 + HOUR)  # the slot was renewed too
    store.renew_claims([], T0 + HOUR)


def test_abandon_claim_makes_the_doorbell_due_and_the_attempt_counted(store: RecordStore) -> None:
    r = rec()
    bell = msg(r, due_at=T0 + HOUR)
    store.insert_run(r, [bell])
    assert store.claim(bell.id, "run-1", 1, "dead", T0, T0 + HOUR).claimed
    store.abandon_claim(bell.id, T0 + SECOND)
    assert [m.id for m in store.claim_due_outbox(T0 + SECOND, limit=5, redeliver_after=MINUTE, max_interval=HOUR)] == [
        bell.id
    ]
    claim = store.claim(bell.id, "run-1", 1, "next", T0 + SECOND, T0 + HOUR)
    assert claim.claimed and claim.abandoned
    store.abandon_claim("unknown", T0)


def test_replace_doorbell_swaps_it_only_for_its_holder(store: RecordStore) -> None:
    r = rec()
    timers = msg(r, id="run-1.1.timers")
    store.insert_run(r, [timers])
    timeouts = [msg(r, id=f"run-1.1.timeout.{i}", due_at=T0 + i * HOUR) for i in range(2)]
    assert store.replace_doorbell(timers.id, "nobody", timeouts) is False
    assert store.claim(timers.id, "run-1", 1, "t", T0, T0 + MINUTE).claimed
    assert store.replace_doorbell(timers.id, "t", timeouts) is True
    assert sorted(ids(store.outbox())) == sorted(ids(timeouts))
    assert store.replace_doorbell(timers.id, "t", timeouts) is False  # gone
    assert store.claim(timeouts[0].id, "run-1", 1, "u", T0, T0 + MINUTE).claimed
    assert store.replace_doorbell(timeouts[0].id, "u", []) is True
    assert ids(store.outbox()) == [timeouts[1].id]


def test_record_failure_counts_while_the_claim_is_held(store: RecordStore) -> None:
    r = rec(status=2)
    bell = msg(r, due_at=T0 + MINUTE)
    store.insert_run(r, [bell])
    assert store.claim(bell.id, "run-1", 1, "t", T0, T0 + HOUR).claimed
    assert store.record_failure(bell.id, "other", "run-1", 2, err("x"), due_at=T0, retries=1) is None
    assert store.errors("run-1") == []
    assert store.record_failure(bell.id, "t", "run-1", 2, err("first"), due_at=T0 + 5 * SECOND, retries=1) == 1
    assert store.outbox() == [replace(bell, due_at=T0 + 5 * SECOND, retries=1)]
    assert store.record_failure(bell.id, "t", "run-1", 2, err("late"), due_at=T0, retries=9) is None  # let go
    claim = store.claim(bell.id, "run-1", 1, "t2", T0 + 5 * SECOND, T0 + HOUR)
    assert claim.claimed and not claim.abandoned and claim.failures == 1
    # Without a due time the doorbell keeps its own (the run is about to be paused).
    assert store.record_failure(bell.id, "t2", "run-1", 2, err("second"), due_at=None, retries=2) == 2
    assert store.outbox() == [replace(bell, due_at=T0 + 5 * SECOND, retries=2)]
    (counter,) = store.errors("run-1")
    assert (counter.status, counter.count, counter.last_error) == (2, 2, err("second"))
    # A doorbell the run's next write deleted counts nothing.
    assert store.claim(bell.id, "run-1", 1, "t3", T0 + 5 * SECOND, T0 + HOUR).claimed
    assert store.update_run(moved(r, status=3), 1, [])
    assert store.record_failure(bell.id, "t3", "run-1", 2, err(), due_at=T0, retries=3) is None
    assert store.errors("run-1") == []


def test_hook_failures_are_counted_per_doorbell(store: RecordStore) -> None:
    r = rec()
    bell = msg(r, kind="hook", id="run-1.1.hook.completed.0", due_at=T0)
    other = msg(r, kind="hook", id="run-1.1.hook.completed.1", due_at=T0)
    store.insert_run(r, [bell, other])
    assert store.hook_errors("run-1") == []
    for count, token in enumerate(["a", "b"], start=1):
        claim = store.claim(bell.id, "run-1", None, token, T0, T0 + MINUTE)
        assert claim.claimed and claim.failures == count - 1
        due = T0 + count * 30 * SECOND
        assert store.record_hook_failure(bell.id, token, "0:notify", err(f"down {count}"), due_at=due, retries=count)
    assert store.record_hook_failure(other.id, "nobody", "1:audit", err(), due_at=T0, retries=1) is None
    by_id = {m.id: m for m in store.outbox()}
    assert by_id[bell.id] == replace(bell, due_at=T0 + 60 * SECOND, retries=2)
    assert by_id[other.id] == other
    errors = store.hook_errors("run-1")
    assert [(e.message_id, e.run_id, e.hook, e.count) for e in errors] == [(bell.id, "run-1", "0:notify", 2)]
    assert errors[0].last_error == err("down 2")
    # Counters survive the doorbell's deletion (the hook finally succeeded) and later writes of the run.
    store.delete_outbox([bell.id])
    assert store.update_run(moved(r, status=2), 1, [])
    assert [e.count for e in store.hook_errors("run-1")] == [2]
    assert store.claim(bell.id, "run-1", None, "c", T0, T0 + MINUTE).doorbell is None  # never recreated


def test_concurrent_claims_of_one_doorbell_have_one_winner(backend: Backend) -> None:
    r = rec()
    bell = msg(r)
    backend.store.insert_run(r, [bell])
    stores = [backend.open() for _ in range(8)]
    results = run_threads(8, lambda i: stores[i].claim(bell.id, "run-1", 1, f"t{i}", T0, T0 + MINUTE).claimed)
    assert results.count(True) == 1 and results.count(False) == 7, results


# --------------------------------------------------------------------------- text from user code and input

NASTY = [
    "nul \x00 inside",
    "lone surrogate \udcff from a file name",
    "\ud83d half an emoji",
    "emoji \U0001f600 and accents \u00e9",
    "x" * 100_000,
    "",
]


@pytest.mark.parametrize("text", NASTY, ids=["nul", "surrogate", "half-pair", "unicode", "huge", "empty"])
def test_any_failure_text_is_recorded(store: RecordStore, text: str) -> None:
    r = rec(status=2)
    bell = msg(r)
    hook = msg(r, kind="hook", id="run-1.1.hook.paused.0")
    store.insert_run(r, [bell, hook])
    info = ErrorInfo(error_type=f"mod.{text[:50]}", message=text, traceback=f"Traceback\n{text}", occurred_at=T0)
    assert store.claim(bell.id, "run-1", 1, "t", T0, T0 + MINUTE).claimed
    assert store.record_failure(bell.id, "t", "run-1", 2, info, due_at=T0, retries=1) == 1
    assert store.record_error("run-1", 2, info) == 2
    assert store.claim(hook.id, "run-1", None, "h", T0, T0 + MINUTE).claimed
    assert store.record_hook_failure(hook.id, "h", f"0:{text[:50]}", info, due_at=T0, retries=1) == 1
    (counter,) = store.errors("run-1")
    assert counter.last_error == info  # stored as the ErrorInfo made it storable
    assert "\x00" not in counter.last_error.message and len(counter.last_error.message) <= 25_000
    counter.last_error.message.encode("utf-8")
    assert store.hook_errors("run-1")[0].last_error == info


@pytest.mark.parametrize("text", NASTY, ids=["nul", "surrogate", "half-pair", "unicode", "huge", "empty"])
def test_any_reason_and_origin_are_stored(store: RecordStore, text: str) -> None:
    v1 = replace(rec(), meta=Meta(version=1, run_state_reason=text, trace_origin=f"{text[:100]}.py:1"))
    store.insert_run(v1, [])
    assert store.lookup("run-1").meta.trace_origin == v1.meta.trace_origin
    v2 = replace(moved(v1, run_state=RunState.PAUSED), meta=Meta(version=2, run_state_reason=text))
    assert store.update_run(v2, 1, [])
    stored = store.lookup("run-1")
    assert stored.meta.run_state_reason == v2.meta.run_state_reason
    assert [h.reason for h in store.history("run-1")] == [v1.meta.run_state_reason, v2.meta.run_state_reason]
    assert "\x00" not in stored.meta.run_state_reason and len(stored.meta.run_state_reason) <= 2000


# --------------------------------------------------------------------------- dead letters

EVERY_BYTE = bytes(range(256)) * 3 + b"\x00"


def letter(
    id: str = "dl-1",
    *,
    queue: str = "onboarding.created",
    body: bytes = EVERY_BYTE,
    at: datetime = T0,
    reason: str = "not a message: JSONDecodeError: Expecting value",
) -> DeadLetter:
    return DeadLetter(
        id=id,
        queue=queue,
        body=body,
        reason=reason,
        received_at=at,
        content_type="application/json",
        content_encoding="utf-8",
        headers='{"task": "onboarding.created"}',
        worker="w1@host",
    )


def test_a_dead_letter_keeps_its_bytes_exactly(store: RecordStore) -> None:
    kept = letter()
    store.add_dead_letter(kept)
    [found] = store.dead_letters()
    assert found == kept and found.body == EVERY_BYTE and type(found.body) is bytes
    assert found.received_at.tzinfo is not None
    empty = letter("dl-2", body=b"", at=T0 + SECOND)
    store.add_dead_letter(empty)
    assert store.dead_letters(id_prefix="dl-2") == [empty]


def test_adding_a_dead_letter_twice_keeps_the_first(store: RecordStore) -> None:
    store.add_dead_letter(letter(body=b"first"))
    store.add_dead_letter(letter(body=b"second"))
    assert [d.body for d in store.dead_letters()] == [b"first"]
    assert store.count_dead_letters() == 1


def test_dead_letters_are_listed_newest_first_in_pages_and_filtered(store: RecordStore) -> None:
    for i in range(5):
        store.add_dead_letter(letter(f"dl-{i}", queue=f"q{i % 2}", at=T0 + i * SECOND))
    store.add_dead_letter(letter("dl-x", queue="q0", at=T0 + 4 * SECOND))  # same time as dl-4: the id decides
    assert [d.id for d in store.dead_letters()] == ["dl-x", "dl-4", "dl-3", "dl-2", "dl-1", "dl-0"]
    assert [d.id for d in store.dead_letters(limit=2, offset=1)] == ["dl-4", "dl-3"]
    assert [d.id for d in store.dead_letters(queue="q1")] == ["dl-3", "dl-1"]
    assert store.count_dead_letters() == 6 and store.count_dead_letters(queue="q0") == 4
    assert store.count_dead_letters(queue="nowhere") == 0 and store.dead_letters(queue="nowhere") == []


def test_dead_letters_are_found_by_id_prefix(store: RecordStore) -> None:
    store.add_dead_letter(letter("ab12-one"))
    store.add_dead_letter(letter("ab34-two", at=T0 + SECOND))
    store.add_dead_letter(letter("a%_-three", at=T0 + 2 * SECOND))
    assert [d.id for d in store.dead_letters(id_prefix="ab")] == ["ab34-two", "ab12-one"]
    assert [d.id for d in store.dead_letters(id_prefix="ab12")] == ["ab12-one"]
    assert store.count_dead_letters(id_prefix="a%") == 1  # LIKE wildcards are taken literally
    assert store.count_dead_letters(id_prefix="a_") == 0
    assert store.count_dead_letters(queue="onboarding.created", id_prefix="ab") == 2


def test_discarding_dead_letters_says_how_many_there_were(store: RecordStore) -> None:
    for i in range(3):
        store.add_dead_letter(letter(f"dl-{i}", at=T0 + i * SECOND))
    assert store.discard_dead_letters(["dl-0", "dl-2", "dl-2", "unknown"]) == 2
    assert [d.id for d in store.dead_letters()] == ["dl-1"]
    assert store.discard_dead_letters(["dl-0"]) == 0
    assert store.discard_dead_letters([]) == 0
    assert store.count_dead_letters() == 1


@pytest.mark.parametrize("text", NASTY, ids=["nul", "surrogate", "half-pair", "unicode", "huge", "empty"])
def test_any_dead_letter_text_is_stored(store: RecordStore, text: str) -> None:
    kept = DeadLetter(
        id="dl-1",
        queue=text,
        body=text.encode("utf-8", "surrogatepass"),
        reason=text,
        received_at=T0,
        content_type=text,
        content_encoding=text,
        headers=text,
        worker=text,
    )
    store.add_dead_letter(kept)
    [found] = store.dead_letters()
    assert found == kept and found.body == text.encode("utf-8", "surrogatepass")
    assert "\x00" not in found.reason + found.queue + found.headers and len(found.reason) <= 2000


def test_a_dead_letter_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        letter(at=datetime(2024, 1, 1))


# --------------------------------------------------------------------------- slots


def test_slots_admit_up_to_the_limit(store: RecordStore) -> None:
    take = [store.acquire_slot("wf", 2, 3, f"h{i}", T0, T0 + MINUTE) for i in range(5)]
    assert take == [True, True, True, False, False]
    assert store.acquire_slot("wf", 3, 1, "other-status", T0, T0 + MINUTE)  # slots are per status
    assert store.acquire_slot("other-wf", 2, 1, "other-workflow", T0, T0 + MINUTE)
    store.release_slot("h1")
    assert store.acquire_slot("wf", 2, 3, "h5", T0, T0 + MINUTE)
    assert not store.acquire_slot("wf", 2, 3, "h6", T0, T0 + MINUTE)
    store.release_slot("unknown")


def test_expired_slots_are_free_again_and_extension_keeps_them(store: RecordStore) -> None:
    assert store.acquire_slot("wf", 2, 2, "dead", T0, T0 + MINUTE)
    assert store.acquire_slot("wf", 2, 2, "alive", T0, T0 + MINUTE)
    store.renew_claims(["alive"], T0 + HOUR)  # a slot is held under its doorbell's id
    later = T0 + 2 * MINUTE
    assert store.acquire_slot("wf", 2, 2, "new", later, later + MINUTE)  # took the dead holder's slot
    assert not store.acquire_slot("wf", 2, 2, "another", later, later + MINUTE)
    store.release_slot("dead")  # the dead holder's late release does not free the slot someone else holds
    assert not store.acquire_slot("wf", 2, 2, "another", later, later + MINUTE)


def test_concurrent_slot_takers_never_exceed_the_limit(backend: Backend) -> None:
    stores = [backend.open() for _ in range(8)]

    def take(i: int) -> bool:
        return stores[i].acquire_slot("wf", 2, 3, f"h{i}", T0, T0 + MINUTE)

    results = run_threads(8, take)
    assert results.count(True) <= 3 and all(isinstance(r, bool) for r in results)
    assert sum(
        backend.store.acquire_slot("wf", 2, 3, f"late{i}", T0, T0 + MINUTE) for i in range(3)
    ) == 3 - results.count(True)


# --------------------------------------------------------------------------- errors


def test_record_error_counts_per_status(store: RecordStore) -> None:
    store.insert_run(rec(), [])
    assert store.errors("run-1") == []
    assert store.record_error("run-1", 2, err("first", T0)) == 1
    assert store.record_error("run-1", 2, err("second", T0 + SECOND)) == 2
    assert store.record_error("run-1", 1, err("other", T0)) == 1
    assert store.record_error("run-1", 2, err("third", T0 + 2 * SECOND)) == 3
    errors = store.errors("run-1")
    assert [(e.run_id, e.status, e.count) for e in errors] == [("run-1", 1, 1), ("run-1", 2, 3)]
    assert errors[1].last_error == err("third", T0 + 2 * SECOND)
    assert store.errors("run-2") == []


def test_concurrent_record_error_loses_no_count(backend: Backend) -> None:
    backend.store.insert_run(rec(), [])
    stores = [backend.open() for _ in range(8)]
    results = run_threads(8, lambda i: stores[i].record_error("run-1", 1, err(f"e{i}")))
    assert sorted(results, key=str) == list(range(1, 9))
    assert backend.store.errors("run-1")[0].count == 8


def test_update_can_reset_the_remaining_error_counter(store: RecordStore) -> None:
    v1 = rec(status=2)
    store.insert_run(v1, [])
    store.record_error("run-1", 1, err("old status"))
    store.record_error("run-1", 2, err("a"))
    store.record_error("run-1", 2, err("b", T0 + SECOND))
    paused = moved(v1, run_state=RunState.PAUSED)
    assert store.update_run(paused, 1, [])
    assert [(e.status, e.count) for e in store.errors("run-1")] == [(2, 2)]
    # A lost compare-and-set resets nothing either.
    assert store.update_run(moved(paused, run_state=RunState.RUNNING), 1, [], reset_errors=True) is False
    assert store.errors("run-1")[0].count == 2
    assert store.update_run(moved(paused, run_state=RunState.RUNNING), 2, [], reset_errors=True)
    (counter,) = store.errors("run-1")
    assert (counter.status, counter.count, counter.last_error) == (2, 0, err("b", T0 + SECOND))
    assert store.record_error("run-1", 2, err("c")) == 1


def test_scrub_history_replaces_every_stored_object(store: RecordStore) -> None:
    v1 = rec()
    other = rec("run-2", foreign_id="customer-2")
    store.insert_run(v1, [])
    store.insert_run(other, [])
    v2 = replace(moved(v1, status=2), object=b'{"name":"Zo\xc3\xab","v":2}')
    assert store.update_run(v2, 1, [])
    store.scrub_history("run-1", b"{}")
    assert [(h.version, h.object) for h in store.history("run-1")] == [(1, b"{}"), (2, b"{}")]
    assert store.history("run-2")[0].object == other.object
    assert store.lookup("run-1").object == v2.object  # the record itself is the caller's to rewrite
    store.scrub_history("unknown", b"{}")


# --------------------------------------------------------------------------- insert_outbox, stranded runs


def test_insert_outbox_only_adds_missing_ids(store: RecordStore) -> None:
    r = rec()
    original = msg(r, kind="hook", id="h1", body={"v": 1})
    store.insert_run(r, [original])
    fresh = msg(r, id="s1", created_at=T0 + SECOND)
    store.insert_outbox(
        [msg(r, kind="hook", id="h1", body={"v": 2}), fresh, msg(r, id="s1", body={"dup": True}, created_at=T0)]
    )
    assert store.outbox() == [original, fresh]
    store.insert_outbox([])
    store.insert_outbox([fresh])
    assert store.outbox() == [original, fresh]


def test_stranded_runs(store: RecordStore) -> None:
    cutoff = T0 + 100 * SECOND

    def add(run_id: str, bells: Sequence[OutboxMessage] = (), **kw: Any) -> None:
        store.insert_run(rec(run_id, foreign_id=run_id, **kw), bells)

    # Inserted in creation order: MemoryStore answers in insertion order, SQL by creation time.
    add("b-initiated", created_at=T0 + SECOND, run_state=RunState.INITIATED, status=4)
    add("a-stranded", created_at=T0 + 2 * SECOND, status=3)
    add("c-hook-only", [msg("c-hook-only", kind="hook", id="c.h")], created_at=T0 + 3 * SECOND, status=3)
    add("d-has-step", [msg("d-has-step")], status=3)
    add("e-recent", created_at=cutoff, status=3)
    add("f-paused", run_state=RunState.PAUSED, status=3)
    add("g-completed", run_state=RunState.COMPLETED, status=3)
    add("h-other-status", status=5)
    add("i-other-workflow", workflow="billing", status=3)

    found = store.stranded_runs("onboarding", [3, 4], cutoff, 10)
    assert [r.run_id for r in found] == ["b-initiated", "a-stranded", "c-hook-only"]
    assert found[1] == store.lookup("a-stranded")
    assert [r.run_id for r in store.stranded_runs("onboarding", [3, 4], cutoff, 2)] == ["b-initiated", "a-stranded"]
    assert store.stranded_runs("onboarding", [], cutoff, 10) == []
    assert [r.run_id for r in store.stranded_runs("billing", [3], cutoff, 10)] == ["i-other-workflow"]


# --------------------------------------------------------------------------- hook errors


# --------------------------------------------------------------------------- SQL specifics


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
def test_a_connection_lost_mid_statement_is_a_documented_error(pg_url: str, pg_server: PostgresServer) -> None:
    # An engine of the caller's is used as it is, without the check that replaces closed connections.
    store = SQLStore(sa.create_engine(pg_url))
    try:
        store.insert_run(rec("run-l", foreign_id="lost"), [])
        database = sa.make_url(pg_url).database
        assert database is not None
        assert pg_server.terminate_connections(database) >= 1
        with pytest.raises(DatabaseConnectionLost, match="may or may not have been committed") as lost:
            store.lookup("run-l")
        assert isinstance(lost.value.__cause__, sa.exc.DBAPIError)
        assert store.lookup("run-l").run_id == "run-l"  # the pool reconnected
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
