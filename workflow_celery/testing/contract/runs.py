"""The contract of ``RunStore``: inserting runs, compare-and-set updates, history, reads.

Subclass ``RunStoreContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ...core.errors import RecordNotFound, WorkflowInProgress
from ...core.ports import RecordStore
from ...core.record import Meta, Record
from ...core.run_state import RunState
from .run_listing import RunListingContract
from .support import (
    NASTY,
    NASTY_IDS,
    SECOND,
    T0,
    err,
    ids,
    moved,
    msg,
    rec,
    run_threads,
)


class RunStoreContract(RunListingContract):
    """``RunStore``: inserting runs, compare-and-set updates, history and reads (with ``RunListingContract``)."""

    def test_create_schema_is_idempotent_and_keeps_data(self, store: RecordStore) -> None:
        store.insert_run(rec(), [msg(rec())])
        store.create_schema()
        store.create_schema()
        assert store.lookup("run-1") == rec()
        assert ids(store.outbox()) == ["run-1.1"]

    def test_round_trip_of_every_field(self, store: RecordStore) -> None:
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
            meta=Meta(
                version=3, run_state_reason="waiting for KYC", status_description="Verify", trace_origin="x.py:42"
            ),
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

    def test_outside_a_callers_transaction_nothing_waits_for_a_commit(self, store: RecordStore) -> None:
        called: list[int] = []
        assert store.after_commit(lambda: called.append(1)) is False
        assert called == []

    def test_a_write_on_its_own_commits_as_any_other(self, store: RecordStore) -> None:
        record = rec(run_id="own-1")
        with store.on_its_own():
            store.insert_run(record, [])
            assert store.after_commit(lambda: None) is False
        assert store.lookup("own-1") == record

    def test_lookup_and_latest_raise_record_not_found(self, store: RecordStore) -> None:
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

    def test_insert_writes_first_history_row_and_doorbells(self, store: RecordStore) -> None:
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

    def test_second_in_progress_run_for_a_foreign_id_is_refused(self, store: RecordStore) -> None:
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
    def test_new_run_allowed_once_the_previous_one_finished(self, store: RecordStore, final: RunState) -> None:
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

    def test_finished_runs_do_not_block_and_are_not_blocked(self, store: RecordStore) -> None:
        store.insert_run(rec("run-1"), [])
        # A run inserted already finished takes no in-progress slot.
        store.insert_run(rec("run-2", run_state=RunState.COMPLETED, created_at=T0 + SECOND), [])
        store.insert_run(rec("run-3", run_state=RunState.DATA_DELETED, created_at=T0 + 2 * SECOND), [])
        assert [r.run_id for r in store.list_runs("onboarding", order="asc")] == ["run-1", "run-2", "run-3"]

    def test_duplicate_run_id_is_rejected(self, store: RecordStore) -> None:
        done = rec("run-1", run_state=RunState.COMPLETED)
        store.insert_run(done, [])
        with pytest.raises(ValueError):
            store.insert_run(replace(done, foreign_id="customer-9"), [])
        assert store.lookup("run-1") == done
        assert len(store.history("run-1")) == 1

    def test_concurrent_inserts_for_one_foreign_id_admit_exactly_one(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        stores = [open_store() for _ in range(8)]
        results = run_threads(
            8, lambda i: stores[i].insert_run(rec(f"run-{i}", created_at=T0 + i * SECOND), [msg(f"run-{i}")])
        )
        winners = [i for i, r in enumerate(results) if r is None]
        losers = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert all(isinstance(r, WorkflowInProgress) for r in losers), losers
        winner = f"run-{winners[0]}"
        assert all(r.context["run_id"] == winner for r in losers if isinstance(r, WorkflowInProgress))
        assert [r.run_id for r in store.list_runs("onboarding")] == [winner]
        assert ids(store.outbox()) == [f"{winner}.1"]

    def test_latest_is_the_newest_by_creation_time(self, store: RecordStore) -> None:
        runs = [rec(f"run-{i}", created_at=T0 + i * SECOND, run_state=RunState.COMPLETED) for i in range(3)]
        for r in runs:
            store.insert_run(r, [])
        store.insert_run(rec("run-x", foreign_id="customer-2", created_at=T0 + 10 * SECOND), [])
        store.insert_run(rec("run-y", workflow="billing", created_at=T0 + 10 * SECOND), [])
        assert store.latest("onboarding", "customer-1") == runs[2]

    def test_update_run_compare_and_set(self, store: RecordStore) -> None:
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

    def test_history_has_every_version(self, store: RecordStore) -> None:
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

    def test_update_supersedes_step_doorbells_but_keeps_hooks(self, store: RecordStore) -> None:
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

    def test_update_upserts_doorbells_by_id(self, store: RecordStore) -> None:
        v1 = rec()
        store.insert_run(v1, [msg(v1, kind="hook", id="hook-a", body={"n": 1})])
        v2 = moved(v1, status=2)
        replacement = msg(v2, kind="hook", id="hook-a", body={"n": 2}, due_at=T0 + 60 * SECOND)
        # The same id twice in one write: the last one wins.
        assert store.update_run(v2, 1, [msg(v2), msg(v2, kind="hook", id="hook-a", body={"n": 0}), replacement])
        assert store.outbox("run-1") == [replacement, msg(v2)]

    def test_update_may_rewrite_a_step_doorbell_with_the_same_id(self, store: RecordStore) -> None:
        v1 = rec()
        store.insert_run(v1, [msg(v1, id="run-1.tick", body={"n": 1}), msg(v1, id="run-1.old")])
        v2 = moved(v1, status=2)
        rewritten = msg(v2, id="run-1.tick", body={"n": 2}, due_at=T0 + 5 * SECOND)
        assert store.update_run(v2, 1, [rewritten])
        assert store.outbox("run-1") == [rewritten]

    def test_moving_back_into_progress_conflicts_with_a_newer_run(self, store: RecordStore) -> None:
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

    def test_concurrent_compare_and_set_has_one_winner(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        v1 = rec()
        store.insert_run(v1, [msg(v1)])
        stores = [open_store() for _ in range(8)]

        def attempt(i: int) -> bool:
            nxt = moved(v1, status=10 + i)
            return stores[i].update_run(nxt, 1, [msg(nxt, id=f"run-1.2.{i}")])

        results = run_threads(8, attempt)
        assert sorted(results, key=str) == [False] * 7 + [True]
        winner = results.index(True)
        assert store.lookup("run-1").status == 10 + winner
        assert [h.version for h in store.history("run-1")] == [1, 2]
        assert ids(store.outbox()) == [f"run-1.2.{winner}"]

    def test_scrub_history_replaces_every_stored_object(self, store: RecordStore) -> None:
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

    @pytest.mark.parametrize("text", NASTY, ids=NASTY_IDS)
    def test_any_reason_and_origin_are_stored(self, store: RecordStore, text: str) -> None:
        v1 = replace(rec(), meta=Meta(version=1, run_state_reason=text, trace_origin=f"{text[:100]}.py:1"))
        store.insert_run(v1, [])
        assert store.lookup("run-1").meta.trace_origin == v1.meta.trace_origin
        v2 = replace(moved(v1, run_state=RunState.PAUSED), meta=Meta(version=2, run_state_reason=text))
        assert store.update_run(v2, 1, [])
        stored = store.lookup("run-1")
        assert stored.meta.run_state_reason == v2.meta.run_state_reason
        assert [h.reason for h in store.history("run-1")] == [v1.meta.run_state_reason, v2.meta.run_state_reason]
        assert "\x00" not in stored.meta.run_state_reason and len(stored.meta.run_state_reason) <= 2000
