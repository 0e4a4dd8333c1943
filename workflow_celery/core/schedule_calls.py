"""A built workflow's schedule calls: ``schedule``, ``unschedule``, ``schedules``, ``schedule_slots``."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from .schedules import CatchUp, Schedule, ScheduleSlot

if TYPE_CHECKING:
    from .ports import Clock
    from .scheduler import Scheduler, SlotFilter

T = TypeVar("T")


class ScheduleCalls(Generic[T]):
    """The schedule calls of ``Workflow``; the work is the ``Scheduler``'s."""

    if TYPE_CHECKING:  # provided by Workflow
        scheduler: Scheduler[T]
        clock: Clock

    def schedule(
        self,
        foreign_id: str,
        spec: str,
        *,
        initial_value: T | None = None,
        time_zone: str = "UTC",
        catch_up: CatchUp = "latest",
        filter: SlotFilter | None = None,
    ) -> None:
        """Trigger a run for ``foreign_id`` at every slot of ``spec``, durably, from any worker.

        ``spec``: five cron fields (``*/15 9-17 * * MON-FRI``), ``@hourly``,
        ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``, or ``@every 10m``
        (see ``workflow_celery.core.schedules``), read in ``time_zone`` (an
        IANA name; daylight saving time as Debian's cron). The schedule is a
        row of the store: workers consuming any queue fire it, exactly one
        run per slot however many they are; a slot whose previous run is
        still in progress is skipped and recorded (``schedule_slots``).
        ``catch_up``: after downtime, fire the latest missed slot once
        (``"latest"``) or none (``"skip"``). ``filter(foreign_id, slot) ->
        bool``, a module-level function (kept by name, as Celery keeps
        tasks), may veto a slot. Defining the same schedule again (at every
        start-up, say) changes nothing; a new spec or time zone starts from
        the next slot after now; ``initial_value``, ``catch_up`` and
        ``filter`` become the ones given. Raises ``ConfigurationError`` for a
        bad spec, time zone, catch-up or filter, or a store that keeps no
        schedules, and ``SerializationError`` for an initial value that is not
        the object type. (The original, luno/workflow, runs a schedule as a loop
        in the calling process and allows single values per cron field.)
        """
        self.scheduler.schedule(
            foreign_id, spec, initial_value=initial_value, time_zone=time_zone, catch_up=catch_up, filter=filter
        )

    def unschedule(self, foreign_id: str) -> bool:
        """Remove the schedule of ``foreign_id`` and its recorded slots; False if there was none.

        Runs it started are not touched.
        """
        return self.scheduler.unschedule(foreign_id)

    def schedules(self) -> builtins.list[Schedule]:
        """This workflow's schedules, by foreign id, with their next slot and last outcome."""
        return self.scheduler.schedules()

    def schedule_slots(self, foreign_id: str, *, limit: int = 25) -> builtins.list[ScheduleSlot]:
        """What became of the schedule's slots, newest first (the newest 1,000 are kept)."""
        return self.scheduler.slots(foreign_id, limit)

    def fire_schedules_once(self, now: datetime | None = None, *, limit: int = 100) -> int:
        """Fire this workflow's due slots; what each worker's maintenance round does. Returns how many."""
        return self.scheduler.fire_due(now or self.clock.now(), limit=limit)
