"""The contract of ``RunStore``'s queries: ``list_runs``, ``count_runs``, ``stranded_runs``.

Subclass ``RunListingContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Unpack

from ...core.ports import OutboxMessage, RecordStore
from ...core.record import Record
from ...core.run_state import RunState
from .support import (
    SECOND,
    T0,
    RunFilter,
    StoreContract,
    msg,
    rec,
)


def _populate(store: RecordStore) -> list[Record]:
    """53 runs of two workflows, in every combination of the filters."""
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


class RunListingContract(StoreContract):
    """``RunStore``'s queries: ``list_runs`` pages and filters, ``count_runs``, ``stranded_runs``."""

    def test_list_runs_pages_in_both_orders(self, store: RecordStore) -> None:
        records = _populate(store)
        everything = sorted(records, key=lambda r: (r.created_at, r.run_id))
        pages = [store.list_runs(None, limit=10, offset=o, order="asc") for o in range(0, 60, 10)]
        assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 3]
        assert [r for p in pages for r in p] == everything
        desc = [r for o in range(0, 60, 10) for r in store.list_runs(None, limit=10, offset=o)]
        assert desc == everything[::-1]
        assert store.list_runs(None, limit=10, offset=53) == []
        assert store.list_runs(None) == everything[::-1][:25]

    def test_list_runs_filters(self, store: RecordStore) -> None:
        records = _populate(store)

        def expect(pred: Callable[[Record], bool]) -> list[str]:
            return [r.run_id for r in sorted(records, key=lambda r: (r.created_at, r.run_id)) if pred(r)]

        def got(workflow: str | None, **kw: Unpack[RunFilter]) -> list[str]:
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
        assert [r.run_id for r in page] == expect(lambda r: r.workflow_name == "onboarding" and r.status == 1)[::-1][
            2:5
        ]

    def test_list_runs_by_creation_time(self, store: RecordStore) -> None:
        records = _populate(store)
        after, before = T0 + 5 * SECOND, T0 + 10 * SECOND  # inclusive, exclusive
        expected = [
            r.run_id for r in sorted(records, key=lambda r: (r.created_at, r.run_id)) if after <= r.created_at < before
        ]
        listed = store.list_runs(None, created_after=after, created_before=before, limit=100, order="asc")
        assert [r.run_id for r in listed] == expected and len(expected) == 10
        assert store.count_runs(None, created_after=after, created_before=before) == 10
        assert store.count_runs("billing", created_after=after) == sum(
            r.workflow_name == "billing" and r.created_at >= after for r in records
        )
        assert store.count_runs(None, created_before=T0) == 0

    def test_count_runs_counts_every_page(self, store: RecordStore) -> None:
        _populate(store)
        assert store.count_runs(None) == 53 and len(store.list_runs(None)) == 25
        assert store.count_runs("onboarding") == 35
        filters: list[RunFilter] = [
            {"status": 2},
            {"run_state": RunState.RUNNING},
            {"foreign_id": "customer-1"},
            {"status": 3, "run_state": RunState.COMPLETED, "foreign_id": "customer-3"},
        ]
        for kw in filters:
            for workflow in (None, "onboarding", "billing"):
                expected = len(store.list_runs(workflow, limit=100, **kw))
                assert store.count_runs(workflow, **kw) == expected, (workflow, kw)
        assert store.count_runs("nobody") == 0
        assert store.count_runs(None, status=99) == 0

    def test_runs_are_found_by_run_id_prefix(self, store: RecordStore) -> None:
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

    def test_stranded_runs(self, store: RecordStore) -> None:
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
