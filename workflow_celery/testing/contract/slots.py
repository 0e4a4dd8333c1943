"""The contract of ``Slots``: never more than ``limit`` holders of a step's slots.

Subclass ``SlotsContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable

from ...core.ports import RecordStore
from .support import (
    HOUR,
    MINUTE,
    T0,
    StoreContract,
    run_threads,
)


class SlotsContract(StoreContract):
    """``Slots``: never more than ``limit`` holders of a step's slots; expired ones are free again."""

    def test_slots_admit_up_to_the_limit(self, store: RecordStore) -> None:
        take = [store.acquire_slot("wf", 2, 3, f"h{i}", T0, T0 + MINUTE) for i in range(5)]
        assert take == [True, True, True, False, False]
        assert store.acquire_slot("wf", 3, 1, "other-status", T0, T0 + MINUTE)  # slots are per status
        assert store.acquire_slot("other-wf", 2, 1, "other-workflow", T0, T0 + MINUTE)
        store.release_slot("h1")
        assert store.acquire_slot("wf", 2, 3, "h5", T0, T0 + MINUTE)
        assert not store.acquire_slot("wf", 2, 3, "h6", T0, T0 + MINUTE)
        store.release_slot("unknown")

    def test_expired_slots_are_free_again_and_extension_keeps_them(self, store: RecordStore) -> None:
        assert store.acquire_slot("wf", 2, 2, "dead", T0, T0 + MINUTE)
        assert store.acquire_slot("wf", 2, 2, "alive", T0, T0 + MINUTE)
        store.renew_claims(["alive"], T0 + HOUR)  # a slot is held under its doorbell's id
        later = T0 + 2 * MINUTE
        assert store.acquire_slot("wf", 2, 2, "new", later, later + MINUTE)  # took the dead holder's slot
        assert not store.acquire_slot("wf", 2, 2, "another", later, later + MINUTE)
        store.release_slot("dead")  # the dead holder's late release does not free the slot someone else holds
        assert not store.acquire_slot("wf", 2, 2, "another", later, later + MINUTE)

    def test_concurrent_slot_takers_never_exceed_the_limit(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        stores = [open_store() for _ in range(8)]

        def take(i: int) -> bool:
            return stores[i].acquire_slot("wf", 2, 3, f"h{i}", T0, T0 + MINUTE)

        results = run_threads(8, take)
        assert results.count(True) <= 3 and all(isinstance(r, bool) for r in results)
        late = sum(store.acquire_slot("wf", 2, 3, f"late{i}", T0, T0 + MINUTE) for i in range(3))
        assert late == 3 - results.count(True)
