"""Schedules as values: a parsed cron spec and its slots, the stored schedule, and what became of a slot.

A schedule triggers a workflow for one foreign id at every *slot* of its spec.
Slots are instants computed from the spec alone (never from when a worker
happened to look), so every process agrees on them, and a slot's run id is
derived from it (``slot_run_id``): two workers that fire the same slot insert
the same run, and the database keeps one.

Specs (``parse_spec``):

- five cron fields, ``minute hour day-of-month month day-of-week``, with
  ranges, lists, steps and names (``*/15 9-17 * * MON-FRI``), evaluated by
  cronsim in the schedule's time zone, daylight saving time as Debian's cron
  does it (see ``docs/schedules.md``);
- ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``), ``@hourly``: the usual five-field equivalents;
- ``@every <duration>`` such as ``@every 10m`` or ``@every 1h30m`` (units
  ``s``, ``m``, ``h``, ``d``; at least one second): slots at whole multiples
  of the duration since 1970-01-01 00:00 UTC, so ``@every 10m`` fires at
  :00, :10, :20 whatever the time zone and whenever it was defined.
"""

from __future__ import annotations

import enum
import functools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, get_args, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from .errors import ConfigurationError

CatchUp = Literal["latest", "skip"]
"""What a schedule does with *missed* slots: slots more than ``GRACE`` old when a worker first sees them.

Slots younger than that are each fired, in order, whatever the policy: a
busy worker or a restart loses none. Missed slots (downtime) are recorded as
``missed``, except that with ``latest`` (the default), when no younger slot
is due, the latest missed slot is fired once. With ``skip`` none is fired.
"""
CATCH_UPS: tuple[str, ...] = get_args(CatchUp)

GRACE = timedelta(seconds=60)
"""How late a slot may be and still be fired as a slot of its own (see ``CatchUp``)."""

MAX_SLOTS_PER_ROUND = 100
"""Slots of one schedule fired in one round; more wait for the next round."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

FIELDS = "minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EVERY = timedelta(days=3650)
_DURATION = re.compile(r"(\d+)([smhd])")

_SLOT_NAMESPACE = uuid.UUID("5a0c4e3e-8f5d-4a53-9a47-2f0c2b7d1e61")

WALK_LIMIT = 10_000
"""Missed cron slots walked one by one to find the latest; beyond it the latest is looked for near now."""
LOOK_BACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367), timedelta(days=1462))
"""The windows before now searched, in turn, for the latest slot after a long downtime (four years: 29 February)."""


class SlotOutcome(enum.StrEnum):
    """What became of one slot."""

    TRIGGERED = "triggered"
    """A run was started (its id is the slot's run id)."""
    SKIPPED = "skipped"
    """Another run for the foreign id was still in progress."""
    FILTERED = "filtered"
    """The schedule's filter said no."""
    FAILED = "failed"
    """The filter or the trigger raised; the slot is tried again."""
    MISSED = "missed"
    """No worker fired it within ``GRACE`` of its time (and ``catch_up`` did not fire it late)."""


@dataclass(frozen=True)
class Schedule:
    """A schedule as the store keeps it; one per workflow and foreign id.

    ``initial_value`` is the encoded object each run starts with (None: the
    object type's default). ``filter`` is ``"module:qualname"`` of a function
    or empty. ``next_slot`` is the next slot to fire (aware UTC);
    ``revision`` grows whenever the spec or time zone changes, so a worker
    still firing under the old ones cannot move ``next_slot``.
    """

    workflow_name: str
    foreign_id: str
    spec: str
    time_zone: str
    catch_up: str
    initial_value: bytes | None
    filter: str
    next_slot: datetime
    revision: int
    created_at: datetime
    updated_at: datetime
    leased_until: datetime | None = None
    last_slot: datetime | None = None
    last_outcome: str = ""
    last_run_id: str = ""


@dataclass(frozen=True)
class ScheduleSlot:
    """What became of one slot of a schedule (``outcome``), with the run it started or met."""

    workflow_name: str
    foreign_id: str
    slot_at: datetime
    outcome: SlotOutcome
    run_id: str
    detail: str
    recorded_at: datetime


@dataclass(frozen=True)
class Spec:
    """A parsed schedule spec in a time zone; see the module's docstring for the grammar."""

    text: str
    time_zone: str
    cron: str | None
    every: timedelta | None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after ``t`` (aware), as aware UTC."""
        if self.every is not None:
            steps = (t - EPOCH) // self.every
            return EPOCH + (steps + 1) * self.every
        assert self.cron is not None
        return next(CronSim(self.cron, t.astimezone(self.zone))).astimezone(UTC)

    def slots(self, after: datetime) -> Iterator[datetime]:
        """Every slot strictly after ``after``, in order, as aware UTC."""
        if self.every is not None:
            slot = self.next_after(after)
            while True:
                yield slot
                slot += self.every
        assert self.cron is not None
        for local in CronSim(self.cron, after.astimezone(self.zone)):
            yield local.astimezone(UTC)

    def due(self, slot: datetime, now: datetime) -> list[datetime]:
        """The slots from ``slot`` (itself a slot) to ``now``, at most ``MAX_SLOTS_PER_ROUND``."""
        found: list[datetime] = []
        if slot <= now:
            found.append(slot)
            for later in self.slots(slot):
                if later > now or len(found) >= MAX_SLOTS_PER_ROUND:
                    break
                found.append(later)
        return found

    def latest_due(self, slot: datetime, now: datetime) -> tuple[datetime, int | None]:
        """The latest slot at or before ``now``, from the due ``slot`` on, and how many were passed over.

        The count is None ("many") after a long downtime: the slots are then
        not walked one by one, the latest is looked for near ``now``.
        """
        if self.every is not None:
            latest = EPOCH + ((now - EPOCH) // self.every) * self.every
            return latest, max(int((latest - slot) / self.every), 0)
        latest, passed = slot, 0
        for later in self.slots(slot):
            if later > now:
                return latest, passed
            latest, passed = later, passed + 1
            if passed >= WALK_LIMIT:
                break
        for window in LOOK_BACK:
            found = None
            for later in self.slots(max(latest, now - window)):
                if later > now:
                    break
                found = later
            if found is not None:
                return found, None
        return latest, None

    def local(self, t: datetime) -> datetime:
        """``t`` in the schedule's time zone."""
        return t.astimezone(self.zone)


def parse_spec(spec: str, time_zone: str = "UTC") -> Spec:
    """Parse a schedule spec (see the module's docstring). Raises ``ConfigurationError`` saying what is wrong."""
    if not isinstance(spec, str):
        raise ConfigurationError(f"a schedule spec is a str, got {type(spec).__name__}")
    text = " ".join(spec.split())
    zone = _zone(time_zone)
    if text.lower().startswith("@every"):
        compact = text[len("@every") :].replace(" ", "").lower()
        return Spec("@every " + compact, zone, None, _duration(compact, spec))
    if text.startswith("@"):
        cron = ALIASES.get(text.lower())
        if cron is None:
            raise ConfigurationError(
                f"unknown schedule spec {spec!r}: use five cron fields, @every <duration> or one of "
                + ", ".join(ALIASES)
            )
        return Spec(text, zone, cron, None)
    count = len(text.split()) if text else 0
    if count != 5:
        seconds = " (cron has no seconds field; use @every 30s)" if count == 6 else ""
        raise ConfigurationError(
            f"schedule spec {spec!r} has {count} fields: a cron expression has five, {FIELDS}{seconds}; "
            f"or use @every <duration> or one of {', '.join(ALIASES)}"
        )
    try:
        CronSim(text, datetime.now(UTC))
    except CronSimError as exc:
        raise ConfigurationError(
            f"schedule spec {spec!r} is not a valid cron expression: {exc} ({FIELDS}; a day that never comes, "
            "such as 30 February, is refused too)"
        ) from exc
    return Spec(text, zone, text, None)


def _zone(time_zone: str) -> str:
    if not isinstance(time_zone, str) or not time_zone:
        raise ConfigurationError(f"time_zone is an IANA time zone name such as 'Europe/London', got {time_zone!r}")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"unknown time zone {time_zone!r}: use an IANA name such as 'UTC' or 'Europe/London'"
        ) from exc
    if time_zone not in _known_zones():
        # 'localtime' and the like are found, but mean another zone on each machine.
        raise ConfigurationError(
            f"time zone {time_zone!r} is not an IANA zone name: every worker must read the spec alike; "
            "use a name such as 'UTC' or 'Europe/London'"
        )
    return time_zone


@functools.cache
def _known_zones() -> frozenset[str]:
    # The zone database lists the machine's own zone and two technical names beside the real ones.
    return (frozenset(available_timezones()) | {"UTC"}) - {"localtime", "posixrules", "Factory"}


def _duration(compact: str, spec: str) -> timedelta:
    parts = _DURATION.findall(compact)
    units = [u for _, u in parts]
    if (
        not compact
        or "".join(n + u for n, u in parts) != compact
        or units != sorted(set(units), key=list(_UNITS).index, reverse=True)
    ):
        raise ConfigurationError(
            f"schedule spec {spec!r}: @every takes a duration such as 30s, 10m, 1h30m or 2d "
            "(each unit once, the largest first)"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise ConfigurationError(f"schedule spec {spec!r}: @every needs at least one second")
    if seconds > MAX_EVERY.total_seconds():
        raise ConfigurationError(f"schedule spec {spec!r}: @every takes at most {MAX_EVERY.days} days; use a cron spec")
    return timedelta(seconds=seconds)


def slot_run_id(workflow_name: str, foreign_id: str, slot: datetime) -> str:
    """The run id of the run a slot starts: the same in every process that fires the slot."""
    key = f"{workflow_name}\n{foreign_id}\n{slot.astimezone(UTC).isoformat()}"
    return str(uuid.uuid5(_SLOT_NAMESPACE, key))


def check_catch_up(catch_up: str) -> str:
    if catch_up not in CATCH_UPS:
        raise ConfigurationError(f"catch_up must be one of {', '.join(map(repr, CATCH_UPS))}, got {catch_up!r}")
    return catch_up


@runtime_checkable
class ScheduleStore(Protocol):
    """Schedules and what became of their slots (``wf.schedule``): a role a store may take on beside the others."""

    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create the schedule of (workflow, foreign id), or update it; return it as stored.

        An update keeps ``created_at`` and, when the spec and time zone are the
        same, ``next_slot`` and ``revision`` (defining a schedule again at
        every start-up neither skips nor repeats a slot); otherwise
        ``next_slot`` is the one given and ``revision`` grows by one. Either
        way the lease ends: a slot waiting for a retry is tried at once.
        """
        ...

    def remove_schedule(self, workflow_name: str, foreign_id: str) -> bool:
        """Delete the schedule and its slots; False if there was none."""
        ...

    def schedules(self, workflow_name: str | None = None) -> list[Schedule]:
        """Schedules (of one workflow, or all), by workflow name then foreign id."""
        ...

    def take_due_schedules(
        self, workflow_name: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Schedule]:
        """Lease the schedules whose ``next_slot`` is at or before ``now`` until ``lease_until``.

        A schedule whose lease has not expired is not taken: with many
        callers at once each due schedule goes to one of them.
        """
        ...

    def record_slot(
        self, slot: ScheduleSlot, revision: int, next_slot: datetime | None, lease_until: datetime | None = None
    ) -> bool:
        """Keep what became of ``slot`` (replacing an earlier outcome of the same slot) and move the schedule on.

        With ``next_slot`` the schedule's next slot becomes it, its lease
        becomes ``lease_until`` (None: it ends; a worker firing more slots of
        it keeps it) and its last slot, outcome and run are set, if its
        ``revision`` is still ``revision`` and ``next_slot`` is later than
        the stored one.
        Without (a failed slot, tried again), the next slot stays, the lease
        becomes ``lease_until`` and the last slot, outcome and run are set. Only the
        newest ``KEPT_SLOTS`` slots of a schedule are kept. False when the
        schedule is gone or changed.
        """
        ...

    def schedule_slots(self, workflow_name: str, foreign_id: str, *, limit: int = 25) -> list[ScheduleSlot]:
        """The schedule's recorded slots, newest first."""
        ...


KEPT_SLOTS = 1000
"""Slots kept per schedule (the newest); older ones are deleted as new ones are recorded."""
