"""``ScheduleStore`` of ``SQLStore``: its statements, the same on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ...core.ports import KEPT_SLOTS
from ...core.schedules import Schedule, ScheduleSlot, SlotOutcome
from .connections import Connections
from .schema import schedule_slots, schedules, to_utc


class SQLSchedules:
    """The ``ScheduleStore`` role of ``SQLStore`` (which provides ``_c``)."""

    _c: Connections

    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create or update the schedule of (workflow, foreign id); see ``ScheduleStore.put_schedule``."""
        insert = pg_insert if self._c.postgresql else sqlite_insert
        row = _params(schedule)
        new = insert(schedules).values({**row, "revision": 1})
        same = and_(schedules.c.spec == new.excluded.spec, schedules.c.time_zone == new.excluded.time_zone)
        statement = new.on_conflict_do_update(
            index_elements=[schedules.c.workflow_name, schedules.c.foreign_id],
            set_={
                "catch_up": new.excluded.catch_up,
                "initial_value": new.excluded.initial_value,
                "filter": new.excluded.filter,
                "updated_at": new.excluded.updated_at,
                "next_slot": case((same, schedules.c.next_slot), else_=new.excluded.next_slot),
                "revision": case((same, schedules.c.revision), else_=schedules.c.revision + 1),
                "leased_until": None,
                "spec": new.excluded.spec,
                "time_zone": new.excluded.time_zone,
            },
        ).returning(*schedules.c)
        with self._c.single_write() as conn:
            return _schedule(conn.execute(statement).one()._mapping)

    def remove_schedule(self, workflow_name: str, foreign_id: str) -> bool:
        """Delete the schedule and its slots; False if there was none."""
        with self._c.single_write() as conn:
            conn.execute(delete(schedule_slots).where(*_slots_of(workflow_name, foreign_id)))
        with self._c.single_write() as conn:
            gone = conn.execute(
                delete(schedules).where(
                    schedules.c.workflow_name == workflow_name, schedules.c.foreign_id == foreign_id
                )
            )
            return bool(gone.rowcount)

    def schedules(self, workflow_name: str | None = None) -> list[Schedule]:
        """Schedules (of one workflow, or all), by workflow name then foreign id."""
        query = select(schedules).order_by(schedules.c.workflow_name, schedules.c.foreign_id)
        if workflow_name is not None:
            query = query.where(schedules.c.workflow_name == workflow_name)
        with self._c.statement() as conn:
            return [_schedule(row._mapping) for row in conn.execute(query)]

    def take_due_schedules(
        self, workflow_name: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Schedule]:
        """Lease due schedules no one else holds (one statement: two callers never take the same one)."""
        now = to_utc(now)
        due = (
            select(schedules.c.foreign_id)
            .where(
                schedules.c.workflow_name == workflow_name,
                schedules.c.next_slot <= now,
                (schedules.c.leased_until.is_(None)) | (schedules.c.leased_until <= now),
            )
            .order_by(schedules.c.next_slot, schedules.c.foreign_id)
            .limit(limit)
        )
        if self._c.postgresql:
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(schedules)
            .where(
                schedules.c.workflow_name == workflow_name,
                schedules.c.foreign_id.in_(due.scalar_subquery()),
                # Again in the outer statement: PostgreSQL re-checks it on a row another caller just leased.
                (schedules.c.leased_until.is_(None)) | (schedules.c.leased_until <= now),
            )
            .values(leased_until=to_utc(lease_until))
            .returning(*schedules.c)
        )
        with self._c.single_write() as conn:
            rows = conn.execute(statement).all()
        return sorted((_schedule(r._mapping) for r in rows), key=lambda s: (s.next_slot, s.foreign_id))

    def record_slot(
        self, slot: ScheduleSlot, revision: int, next_slot: datetime | None, lease_until: datetime | None = None
    ) -> bool:
        """Keep a slot's outcome and move its schedule on, in one transaction; see ``ScheduleStore.record_slot``."""
        mine = and_(
            schedules.c.workflow_name == slot.workflow_name,
            schedules.c.foreign_id == slot.foreign_id,
            schedules.c.revision == revision,
        )
        if next_slot is None:
            move = (
                update(schedules)
                .where(mine)
                .values(
                    leased_until=None if lease_until is None else to_utc(lease_until),
                    last_slot=to_utc(slot.slot_at),
                    last_outcome=str(slot.outcome),
                    last_run_id=slot.run_id,
                )
            )
        else:
            move = (
                update(schedules)
                .where(mine, schedules.c.next_slot < to_utc(next_slot))
                .values(
                    next_slot=to_utc(next_slot),
                    leased_until=None if lease_until is None else to_utc(lease_until),
                    last_slot=to_utc(slot.slot_at),
                    last_outcome=str(slot.outcome),
                    last_run_id=slot.run_id,
                )
            )
        insert = pg_insert if self._c.postgresql else sqlite_insert
        keep = insert(schedule_slots).values(_slot_params(slot))
        keep = keep.on_conflict_do_update(
            index_elements=[schedule_slots.c.workflow_name, schedule_slots.c.foreign_id, schedule_slots.c.slot_at],
            set_={name: keep.excluded[name] for name in ("outcome", "run_id", "detail", "recorded_at")},
        )
        oldest_kept = (
            select(schedule_slots.c.slot_at)
            .where(*_slots_of(slot.workflow_name, slot.foreign_id))
            .order_by(schedule_slots.c.slot_at.desc())
            .offset(KEPT_SLOTS - 1)
            .limit(1)
            .scalar_subquery()
        )
        prune = delete(schedule_slots).where(
            *_slots_of(slot.workflow_name, slot.foreign_id), schedule_slots.c.slot_at < oldest_kept
        )
        with self._c.transaction() as conn:
            exists = conn.execute(select(schedules.c.revision).where(mine).with_for_update()).first()
            if exists is None:
                return False
            conn.execute(keep)
            conn.execute(prune)
            conn.execute(move)
            return True

    def schedule_slots(self, workflow_name: str, foreign_id: str, *, limit: int = 25) -> list[ScheduleSlot]:
        """The schedule's recorded slots, newest first."""
        query = (
            select(schedule_slots)
            .where(*_slots_of(workflow_name, foreign_id))
            .order_by(schedule_slots.c.slot_at.desc())
            .limit(limit)
        )
        with self._c.statement() as conn:
            return [_slot(row._mapping) for row in conn.execute(query)]


def _slots_of(workflow_name: str, foreign_id: str) -> list[Any]:
    return [schedule_slots.c.workflow_name == workflow_name, schedule_slots.c.foreign_id == foreign_id]


def _params(s: Schedule) -> dict[str, Any]:
    return {
        "workflow_name": s.workflow_name,
        "foreign_id": s.foreign_id,
        "spec": s.spec,
        "time_zone": s.time_zone,
        "catch_up": s.catch_up,
        "initial_value": None if s.initial_value is None else s.initial_value.decode("utf-8"),
        "filter": s.filter,
        "next_slot": to_utc(s.next_slot),
        "created_at": to_utc(s.created_at),
        "updated_at": to_utc(s.updated_at),
    }


def _schedule(row: Mapping[Any, Any]) -> Schedule:
    value = row["initial_value"]
    return Schedule(
        workflow_name=row["workflow_name"],
        foreign_id=row["foreign_id"],
        spec=row["spec"],
        time_zone=row["time_zone"],
        catch_up=row["catch_up"],
        initial_value=None if value is None else value.encode("utf-8"),
        filter=row["filter"],
        next_slot=row["next_slot"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        leased_until=row["leased_until"],
        last_slot=row["last_slot"],
        last_outcome=row["last_outcome"],
        last_run_id=row["last_run_id"],
    )


def _slot_params(slot: ScheduleSlot) -> dict[str, Any]:
    return {
        "workflow_name": slot.workflow_name,
        "foreign_id": slot.foreign_id,
        "slot_at": to_utc(slot.slot_at),
        "outcome": str(slot.outcome),
        "run_id": slot.run_id,
        "detail": slot.detail,
        "recorded_at": to_utc(slot.recorded_at),
    }


def _slot(row: Mapping[Any, Any]) -> ScheduleSlot:
    return ScheduleSlot(
        workflow_name=row["workflow_name"],
        foreign_id=row["foreign_id"],
        slot_at=row["slot_at"],
        outcome=SlotOutcome(row["outcome"]),
        run_id=row["run_id"],
        detail=row["detail"],
        recorded_at=row["recorded_at"],
    )
