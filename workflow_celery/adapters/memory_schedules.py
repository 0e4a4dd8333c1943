"""The schedules of ``MemoryStore``: ``ScheduleStore`` in dicts, with the semantics of ``SQLStore``."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from ..core.ports import KEPT_SLOTS
from ..core.schedules import Schedule, ScheduleSlot


class MemorySchedules:
    """The ``ScheduleStore`` role, in memory and thread-safe."""

    def __init__(self) -> None:
        self._schedules_lock = threading.Lock()
        self._schedules: dict[tuple[str, str], Schedule] = {}
        self._schedule_slots: dict[tuple[str, str], dict[datetime, ScheduleSlot]] = {}

    def put_schedule(self, schedule: Schedule) -> Schedule:
        key = (schedule.workflow_name, schedule.foreign_id)
        with self._schedules_lock:
            old = self._schedules.get(key)
            if old is None:
                stored = replace(schedule, revision=1)
            elif (old.spec, old.time_zone) == (schedule.spec, schedule.time_zone):
                stored = replace(old, catch_up=schedule.catch_up, initial_value=schedule.initial_value,
                                 filter=schedule.filter, updated_at=schedule.updated_at, leased_until=None)  # fmt: skip
            else:
                stored = replace(
                    old, spec=schedule.spec, time_zone=schedule.time_zone, catch_up=schedule.catch_up,
                    initial_value=schedule.initial_value, filter=schedule.filter, next_slot=schedule.next_slot,
                    revision=old.revision + 1, updated_at=schedule.updated_at, leased_until=None,
                )  # fmt: skip
            self._schedules[key] = stored
            return stored

    def remove_schedule(self, workflow_name: str, foreign_id: str) -> bool:
        with self._schedules_lock:
            self._schedule_slots.pop((workflow_name, foreign_id), None)
            return self._schedules.pop((workflow_name, foreign_id), None) is not None

    def schedules(self, workflow_name: str | None = None) -> list[Schedule]:
        with self._schedules_lock:
            found = [s for s in self._schedules.values() if workflow_name in (None, s.workflow_name)]
        return sorted(found, key=lambda s: (s.workflow_name, s.foreign_id))

    def take_due_schedules(
        self, workflow_name: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Schedule]:
        with self._schedules_lock:
            due = sorted(
                (
                    s
                    for s in self._schedules.values()
                    if s.workflow_name == workflow_name
                    and s.next_slot <= now
                    and (s.leased_until is None or s.leased_until <= now)
                ),
                key=lambda s: (s.next_slot, s.foreign_id),
            )[:limit]
            taken = [replace(s, leased_until=lease_until) for s in due]
            for s in taken:
                self._schedules[(s.workflow_name, s.foreign_id)] = s
            return taken

    def record_slot(
        self, slot: ScheduleSlot, revision: int, next_slot: datetime | None, lease_until: datetime | None = None
    ) -> bool:
        key = (slot.workflow_name, slot.foreign_id)
        with self._schedules_lock:
            schedule = self._schedules.get(key)
            if schedule is None or schedule.revision != revision:
                return False
            slots = self._schedule_slots.setdefault(key, {})
            slots[slot.slot_at] = slot
            for old in sorted(slots)[:-KEPT_SLOTS]:
                del slots[old]
            if next_slot is None:
                self._schedules[key] = replace(
                    schedule, leased_until=lease_until, last_slot=slot.slot_at, last_outcome=str(slot.outcome),
                    last_run_id=slot.run_id,
                )  # fmt: skip
            elif next_slot > schedule.next_slot:
                self._schedules[key] = replace(
                    schedule, next_slot=next_slot, leased_until=lease_until, last_slot=slot.slot_at,
                    last_outcome=str(slot.outcome), last_run_id=slot.run_id,
                )  # fmt: skip
            return True

    def schedule_slots(self, workflow_name: str, foreign_id: str, *, limit: int = 25) -> list[ScheduleSlot]:
        with self._schedules_lock:
            slots = list(self._schedule_slots.get((workflow_name, foreign_id), {}).values())
        return sorted(slots, key=lambda s: s.slot_at, reverse=True)[:limit]
