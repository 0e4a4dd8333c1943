"""The contract of ``ErrorLog``: the step and hook failure counters.

Subclass ``ErrorLogContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from ...core.ports import ErrorInfo, RecordStore
from ...core.run_state import RunState
from .support import (
    HOUR,
    MINUTE,
    NASTY,
    NASTY_IDS,
    SECOND,
    T0,
    StoreContract,
    err,
    moved,
    msg,
    rec,
    run_threads,
)


class ErrorLogContract(StoreContract):
    """``ErrorLog``: step and hook failure counters, counted only while the claim is held."""

    def test_record_error_counts_per_status(self, store: RecordStore) -> None:
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

    def test_concurrent_record_error_loses_no_count(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        store.insert_run(rec(), [])
        stores = [open_store() for _ in range(8)]
        results = run_threads(8, lambda i: stores[i].record_error("run-1", 1, err(f"e{i}")))
        assert sorted(results, key=str) == list(range(1, 9))
        assert store.errors("run-1")[0].count == 8

    def test_record_failure_counts_while_the_claim_is_held(self, store: RecordStore) -> None:
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

    def test_hook_failures_are_counted_per_doorbell(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r, kind="hook", id="run-1.1.hook.completed.0", due_at=T0)
        other = msg(r, kind="hook", id="run-1.1.hook.completed.1", due_at=T0)
        store.insert_run(r, [bell, other])
        assert store.hook_errors("run-1") == []
        for count, token in enumerate(["a", "b"], start=1):
            claim = store.claim(bell.id, "run-1", None, token, T0, T0 + MINUTE)
            assert claim.claimed and claim.failures == count - 1
            due = T0 + count * 30 * SECOND
            assert store.record_hook_failure(
                bell.id, token, "0:notify", err(f"down {count}"), due_at=due, retries=count
            )
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

    def test_update_clears_error_counters_of_other_statuses(self, store: RecordStore) -> None:
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

    def test_update_can_reset_the_remaining_error_counter(self, store: RecordStore) -> None:
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

    @pytest.mark.parametrize("text", NASTY, ids=NASTY_IDS)
    def test_any_failure_text_is_recorded(self, store: RecordStore, text: str) -> None:
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
