"""Statements both dialects share: reads, and the writes that are one portable statement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Delete, Select, Update, and_, bindparam, case, delete, exists, func, select

from ...core.run_state import IN_PROGRESS_VALUES, RunState
from .schema import UTCDateTime, history, hook_errors, outbox, records, step_errors, step_slots, to_utc

LOOKUP: Select[Any] = select(records).where(records.c.run_id == bindparam("b_run_id"))

LATEST: Select[Any] = (
    select(records)
    .where(records.c.workflow_name == bindparam("b_workflow"), records.c.foreign_id == bindparam("b_foreign_id"))
    .order_by(records.c.created_at.desc(), records.c.run_id.desc())
    .limit(1)
)

HISTORY: Select[Any] = select(history).where(history.c.run_id == bindparam("b_run_id")).order_by(history.c.version)

OUTBOX_ALL: Select[Any] = select(outbox).order_by(outbox.c.created_at, outbox.c.id)

OUTBOX_OF_RUN: Select[Any] = OUTBOX_ALL.where(outbox.c.run_id == bindparam("b_run_id"))

ERRORS: Select[Any] = (
    select(step_errors).where(step_errors.c.run_id == bindparam("b_run_id")).order_by(step_errors.c.status)
)

HOOK_ERRORS: Select[Any] = (
    select(hook_errors).where(hook_errors.c.run_id == bindparam("b_run_id")).order_by(hook_errors.c.message_id)
)

SCRUB_HISTORY: Update = (
    history.update().where(history.c.run_id == bindparam("b_run_id")).values(object=bindparam("b_object"))
)

STRANDED: Select[Any] = (
    select(records)
    .where(
        records.c.workflow_name == bindparam("b_workflow"),
        records.c.run_state.in_((int(RunState.INITIATED), int(RunState.RUNNING))),
        records.c.status.in_(bindparam("b_statuses", expanding=True)),
        records.c.updated_at < bindparam("b_before", type_=UTCDateTime()),
        ~exists().where(outbox.c.run_id == records.c.run_id, outbox.c.kind == "step"),
    )
    .order_by(records.c.created_at, records.c.run_id)
    .limit(bindparam("b_limit"))
)

IN_PROGRESS_OF: Select[Any] = (
    select(records.c.run_id)
    .where(
        records.c.workflow_name == bindparam("b_workflow"),
        records.c.foreign_id == bindparam("b_foreign_id"),
        records.c.run_state.in_(IN_PROGRESS_VALUES),
        records.c.run_id != bindparam("b_exclude"),
    )
    .limit(1)
)

HELD_BY_TOKEN = and_(outbox.c.id == bindparam("b_id"), outbox.c.claimed_by == bindparam("b_token"))

RELEASE_CLAIM: Update = (
    outbox.update()
    .where(HELD_BY_TOKEN)
    .values(
        claimed_by=None,
        claimed_until=None,
        due_at=func.coalesce(bindparam("b_due_at", type_=UTCDateTime()), outbox.c.due_at),
    )
)

ABANDON_CLAIM: Update = (
    outbox.update()
    .where(outbox.c.id == bindparam("b_id"), outbox.c.claimed_by.is_not(None))
    .values(
        claimed_until=bindparam("b_now", type_=UTCDateTime()),
        due_at=case(
            (outbox.c.due_at > bindparam("b_now", type_=UTCDateTime()), bindparam("b_now", type_=UTCDateTime())),
            else_=outbox.c.due_at,
        ),
    )
)

RELEASE_SLOT: Delete = delete(step_slots).where(step_slots.c.holder == bindparam("b_holder"))


def run_filters(
    workflow_name: str | None,
    status: int | None,
    run_state: RunState | None,
    foreign_id: str | None,
    run_id_prefix: str | None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[Any]:
    where: list[Any] = []
    if created_after is not None:
        where.append(records.c.created_at >= to_utc(created_after))
    if created_before is not None:
        where.append(records.c.created_at < to_utc(created_before))
    if workflow_name is not None:
        where.append(records.c.workflow_name == workflow_name)
    if status is not None:
        where.append(records.c.status == int(status))
    if run_state is not None:
        where.append(records.c.run_state == int(run_state))
    if foreign_id is not None:
        where.append(records.c.foreign_id == foreign_id)
    if run_id_prefix is not None:
        where.append(records.c.run_id.startswith(run_id_prefix, autoescape=True))
    return where
