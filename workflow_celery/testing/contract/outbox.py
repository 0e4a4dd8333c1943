"""The contract of ``Outbox``: pending doorbells and the relay's claims of due ones.

Subclass ``OutboxContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from ...core.ports import RecordStore
from .support import (
    SECOND,
    T0,
    StoreContract,
    ids,
    msg,
    rec,
    run_threads,
)


class OutboxContract(StoreContract):
    """``Outbox``: pending doorbells, their order, and the relay's claims of due rows with backoff."""

    def test_outbox_is_ordered_by_creation_then_id(self, store: RecordStore) -> None:
        a, b = rec("run-a", foreign_id="a"), rec("run-b", foreign_id="b")
        store.insert_run(a, [msg(a, id="z", created_at=T0), msg(a, kind="hook", id="m", created_at=T0 + SECOND)])
        store.insert_run(b, [msg(b, id="a", created_at=T0 + SECOND), msg(b, kind="hook", id="c", created_at=T0)])
        assert ids(store.outbox()) == ["c", "z", "a", "m"]
        assert ids(store.outbox("run-a")) == ["z", "m"]

    def test_outbox_of_one_queue(self, store: RecordStore) -> None:
        a, b = rec("run-a", foreign_id="a"), rec("run-b", foreign_id="b")
        hooks = "onboarding.hooks.completed"
        store.insert_run(a, [msg(a, id="step-a"), replace(msg(a, kind="hook", id="hook-a"), queue=hooks)])
        store.insert_run(b, [replace(msg(b, kind="hook", id="hook-b", created_at=T0 - SECOND), queue=hooks)])
        assert ids(store.outbox(queue=hooks)) == ["hook-b", "hook-a"]
        assert ids(store.outbox("run-a", queue=hooks)) == ["hook-a"]
        assert ids(store.outbox(queue="workflow.onboarding")) == ["step-a"]
        assert store.outbox(queue="onboarding.hooks.paused") == []

    def test_insert_outbox_only_adds_missing_ids(self, store: RecordStore) -> None:
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

    def test_delete_outbox(self, store: RecordStore) -> None:
        r = rec()
        store.insert_run(r, [msg(r, kind="hook", id=f"h{i}") for i in range(4)])
        store.delete_outbox(["h1", "h3", "unknown"])
        assert ids(store.outbox()) == ["h0", "h2"]
        store.delete_outbox([])
        assert ids(store.outbox()) == ["h0", "h2"]

    def test_claim_takes_due_rows_and_backs_off(self, store: RecordStore) -> None:
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

    def test_claim_backoff_doubles_up_to_the_cap(self, store: RecordStore) -> None:
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

    def test_claim_backoff_survives_many_attempts(self, store: RecordStore) -> None:
        r = rec()
        store.insert_run(r, [msg(r, kind="hook", id="stuck", attempts=60)])
        (claimed,) = store.claim_due_outbox(T0, limit=1, redeliver_after=SECOND, max_interval=timedelta(minutes=5))
        assert claimed.attempts == 60
        (row,) = store.outbox()
        assert (row.due_at, row.attempts) == (T0 + timedelta(minutes=5), 61)

    def test_claim_respects_the_limit_in_due_order(self, store: RecordStore) -> None:
        r = rec()
        rows = [msg(r, kind="hook", id=f"m{i:02d}", due_at=T0 - (20 - i) * SECOND) for i in range(20)]
        store.insert_run(r, rows[::-1])
        first = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
        second = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
        third = store.claim_due_outbox(T0, limit=7, redeliver_after=SECOND, max_interval=SECOND)
        assert ids(first) == ids(rows[:7]) and ids(second) == ids(rows[7:14]) and ids(third) == ids(rows[14:])

    def test_concurrent_claimers_never_share_a_row(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        r = rec()
        rows = [msg(r, kind="hook", id=f"m{i:03d}", due_at=T0 - i * timedelta(milliseconds=1)) for i in range(300)]
        store.insert_run(r, rows)
        stores = [open_store() for _ in range(4)]

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
        assert all(m.attempts == 1 for m in store.outbox())
