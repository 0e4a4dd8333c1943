"""The contract of ``ScheduleStore``: schedules kept, leased to one caller, moved on once per slot.

Subclass ``ScheduleStoreContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ...core.schedules import KEPT_SLOTS, Schedule, ScheduleSlot, ScheduleStore, SlotOutcome
from .support import HOUR, MINUTE, NASTY, SECOND, T0, StoreContract, run_threads


def schedule(foreign_id: str = "report", *, spec: str = "@hourly", next_slot: datetime = T0 + HOUR) -> Schedule:
    """A schedule of workflow ``wf`` defined at ``T0``."""
    return Schedule(
        workflow_name="wf",
        foreign_id=foreign_id,
        spec=spec,
        time_zone="Europe/London",
        catch_up="latest",
        initial_value=b'{"name":"nightly \\u00e9"}',
        filter="reports.filters:weekdays",
        next_slot=next_slot,
        revision=1,
        created_at=T0,
        updated_at=T0,
    )


def slot(
    foreign_id: str = "report", at: datetime = T0 + HOUR, outcome: SlotOutcome = SlotOutcome.TRIGGERED
) -> ScheduleSlot:
    return ScheduleSlot("wf", foreign_id, at, outcome, "run-1" if outcome is SlotOutcome.TRIGGERED else "", "", at)


class ScheduleStoreContract(StoreContract):
    """``ScheduleStore``: kept as given, defined again without losing a slot, leased once, moved on once."""

    def test_a_schedule_is_kept_as_given(self, store: ScheduleStore) -> None:
        stored = store.put_schedule(schedule())
        assert stored == schedule()
        assert store.schedules("wf") == [stored] and store.schedules() == [stored] and store.schedules("x") == []
        assert stored.next_slot.tzinfo is not None and stored.leased_until is None and stored.last_slot is None
        nothing = store.put_schedule(replace(schedule("plain"), initial_value=None, filter=""))
        assert nothing.initial_value is None and nothing.filter == ""
        assert [s.foreign_id for s in store.schedules()] == ["plain", "report"]

    def test_foreign_ids_are_kept_exactly(self, store: ScheduleStore) -> None:
        for i, text in enumerate(NASTY[3:5]):
            store.put_schedule(schedule(f"{i}-{text}"))
        assert [s.foreign_id for s in store.schedules("wf")] == [f"{i}-{t}" for i, t in enumerate(NASTY[3:5])]

    def test_defining_the_same_spec_again_keeps_the_slot_and_a_new_one_takes_the_given_slot(
        self, store: ScheduleStore
    ) -> None:
        store.put_schedule(schedule())
        again = store.put_schedule(
            replace(schedule(next_slot=T0 + 2 * HOUR), initial_value=None, catch_up="skip", updated_at=T0 + MINUTE)
        )
        assert (again.next_slot, again.revision, again.created_at) == (T0 + HOUR, 1, T0)
        assert (again.initial_value, again.catch_up, again.updated_at) == (None, "skip", T0 + MINUTE)
        changed = store.put_schedule(schedule(spec="@daily", next_slot=T0 + 3 * HOUR))
        assert (changed.spec, changed.next_slot, changed.revision) == ("@daily", T0 + 3 * HOUR, 2)
        zoned = store.put_schedule(replace(schedule(spec="@daily"), time_zone="UTC"))
        assert zoned.revision == 3

    def test_only_due_schedules_are_taken_and_a_lease_keeps_others_off(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule("early", next_slot=T0 + MINUTE))
        store.put_schedule(schedule("later", next_slot=T0 + HOUR))
        assert store.take_due_schedules("wf", T0, T0 + MINUTE, 10) == []
        [taken] = store.take_due_schedules("wf", T0 + MINUTE, T0 + 2 * MINUTE, 10)
        assert taken.foreign_id == "early" and taken.leased_until == T0 + 2 * MINUTE
        assert store.take_due_schedules("wf", T0 + MINUTE + SECOND, T0 + HOUR, 10) == []  # leased
        assert store.take_due_schedules("other", T0 + 2 * HOUR, T0 + 3 * HOUR, 10) == []
        # The lease expired (the worker died): another caller takes both, oldest slot first.
        both = store.take_due_schedules("wf", T0 + HOUR, T0 + 2 * HOUR, 10)
        assert [s.foreign_id for s in both] == ["early", "later"]
        store.put_schedule(schedule("third", next_slot=T0))
        assert [s.foreign_id for s in store.take_due_schedules("wf", T0 + 3 * HOUR, T0 + 4 * HOUR, 1)] == ["third"]

    def test_recording_a_slot_moves_the_schedule_on_once(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule())
        [taken] = store.take_due_schedules("wf", T0 + HOUR, T0 + 2 * HOUR, 10)
        assert store.record_slot(slot(), taken.revision, T0 + 2 * HOUR)
        [moved] = store.schedules("wf")
        assert (moved.next_slot, moved.leased_until, moved.last_slot) == (T0 + 2 * HOUR, None, T0 + HOUR)
        assert (moved.last_outcome, moved.last_run_id) == ("triggered", "run-1")
        # A late second recorder of the same slot changes the outcome row, not the schedule's next slot.
        assert store.record_slot(slot(outcome=SlotOutcome.SKIPPED), taken.revision, T0 + 2 * HOUR)
        assert store.schedules("wf")[0].next_slot == T0 + 2 * HOUR
        [kept] = store.schedule_slots("wf", "report")
        assert kept.outcome is SlotOutcome.SKIPPED and kept.slot_at == T0 + HOUR

    def test_a_worker_firing_more_slots_keeps_the_lease_and_defining_again_ends_it(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule(next_slot=T0))
        [taken] = store.take_due_schedules("wf", T0 + MINUTE, T0 + 2 * MINUTE, 10)
        assert store.record_slot(slot(at=T0), 1, T0 + SECOND, T0 + 2 * MINUTE)
        [held] = store.schedules("wf")
        assert (held.next_slot, held.leased_until) == (T0 + SECOND, T0 + 2 * MINUTE)
        assert store.take_due_schedules("wf", T0 + MINUTE, T0 + 3 * MINUTE, 10) == []  # still held
        store.put_schedule(schedule(next_slot=T0 + HOUR))  # the same spec again: the slot stays, the lease ends
        [again] = store.schedules("wf")
        assert (again.next_slot, again.leased_until) == (T0 + SECOND, None)
        assert taken.revision == again.revision

    def test_a_failed_slot_keeps_the_schedule_where_it_was_until_the_retry(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule())
        store.take_due_schedules("wf", T0 + HOUR, T0 + 2 * HOUR, 10)
        assert store.record_slot(slot(outcome=SlotOutcome.FAILED), 1, None, T0 + HOUR + 10 * SECOND)
        [held] = store.schedules("wf")
        assert held.next_slot == T0 + HOUR and held.leased_until == T0 + HOUR + 10 * SECOND
        assert (held.last_slot, held.last_outcome) == (T0 + HOUR, "failed")
        assert store.take_due_schedules("wf", T0 + HOUR + 5 * SECOND, T0 + 2 * HOUR, 10) == []
        assert len(store.take_due_schedules("wf", T0 + HOUR + 10 * SECOND, T0 + 2 * HOUR, 10)) == 1

    def test_a_changed_or_removed_schedule_is_not_moved_by_an_old_firing(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule())
        store.put_schedule(schedule(spec="@daily", next_slot=T0 + 5 * HOUR))  # revision 2
        assert not store.record_slot(slot(), 1, T0 + 2 * HOUR)
        assert store.schedules("wf")[0].next_slot == T0 + 5 * HOUR
        assert store.schedule_slots("wf", "report") == []
        assert store.remove_schedule("wf", "report") and not store.remove_schedule("wf", "report")
        assert not store.record_slot(slot(), 2, T0 + 6 * HOUR)
        assert store.schedules() == [] and store.schedule_slots("wf", "report") == []

    def test_slots_are_listed_newest_first_and_only_the_newest_are_kept(self, store: ScheduleStore) -> None:
        store.put_schedule(schedule(next_slot=T0))
        for i in range(KEPT_SLOTS + 5):
            assert store.record_slot(slot(at=T0 + i * MINUTE), 1, T0 + (i + 1) * MINUTE)
        listed = store.schedule_slots("wf", "report", limit=KEPT_SLOTS + 10)
        assert len(listed) == KEPT_SLOTS
        assert listed[0].slot_at == T0 + (KEPT_SLOTS + 4) * MINUTE and listed[-1].slot_at == T0 + 5 * MINUTE
        assert [s.slot_at for s in store.schedule_slots("wf", "report", limit=2)] == [
            T0 + (KEPT_SLOTS + 4) * MINUTE,
            T0 + (KEPT_SLOTS + 3) * MINUTE,
        ]
        store.remove_schedule("wf", "report")
        assert store.schedule_slots("wf", "report") == []

    def test_concurrent_takers_lease_each_due_schedule_to_one_of_them(
        self, store: ScheduleStore, open_store: Callable[[], ScheduleStore]
    ) -> None:
        for i in range(20):
            store.put_schedule(schedule(f"r{i:02}", next_slot=T0))
        stores = [open_store() for _ in range(8)]

        def take(i: int) -> list[str]:
            return [s.foreign_id for s in stores[i].take_due_schedules("wf", T0 + SECOND, T0 + HOUR, 5)]

        results = run_threads(8, take)
        taken = [fid for r in results if isinstance(r, list) for fid in r]
        assert all(isinstance(r, list) for r in results), results
        assert sorted(taken) == [f"r{i:02}" for i in range(20)]
