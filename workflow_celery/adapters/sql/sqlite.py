"""SQLite: the store's writes as plain statements inside one ``BEGIN IMMEDIATE`` transaction each.

For one host: tests, development, a single-machine deployment. Multi-table
writes that PostgreSQL does in one statement are a few statements here, in a
transaction that holds the database's write lock from its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Delete, Insert, Select, Update, bindparam, delete, func, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ...core.dead_letters import DeadLetter
from ...core.failures import backoff
from ...core.ports import Claim, OutboxMessage
from ...core.record import Record
from . import dead_letters as dead_letter_sql
from .connections import Connections
from .queries import HELD_BY_TOKEN, LOOKUP
from .rows import history_params, outbox_params, record_params, to_message, to_record, unique
from .schema import UTCDateTime, history, hook_errors, outbox, records, step_errors, step_slots

_INSERT_RECORD: Insert = records.insert()
_INSERT_HISTORY: Insert = history.insert()
_UPDATE_RECORD: Update = records.update().where(
    records.c.run_id == bindparam("b_run_id"), records.c.version == bindparam("b_expected_version")
)
_DELETE_STEP_DOORBELLS: Delete = delete(outbox).where(outbox.c.run_id == bindparam("b_run_id"), outbox.c.kind == "step")
_DELETE_OTHER_ERRORS: Delete = delete(step_errors).where(
    step_errors.c.run_id == bindparam("b_run_id"), step_errors.c.status != bindparam("b_status")
)
_sq_outbox_insert = sqlite_insert(outbox)
_UPSERT_OUTBOX = _sq_outbox_insert.on_conflict_do_update(
    index_elements=[outbox.c.id],
    set_={c.name: _sq_outbox_insert.excluded[c.name] for c in outbox.c if c.name != "id"},
)
_CLAIM_DUE_SELECT: Select[Any] = (
    select(outbox)
    .where(
        outbox.c.due_at <= bindparam("b_now", type_=UTCDateTime()),
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= bindparam("b_now", type_=UTCDateTime())),
    )
    .order_by(outbox.c.due_at, outbox.c.id)
    .limit(bindparam("b_limit"))
)
_CLAIM_DUE_BUMP: Update = (
    outbox.update()
    .where(outbox.c.id == bindparam("b_id"))
    .values(due_at=bindparam("b_due_at", type_=UTCDateTime()), attempts=bindparam("b_attempts"))
)
_sq_hook_error_insert = sqlite_insert(hook_errors)
_RECORD_HOOK_ERROR = _sq_hook_error_insert.on_conflict_do_update(
    index_elements=[hook_errors.c.message_id],
    set_={
        "count": hook_errors.c.count + 1,
        **{
            name: _sq_hook_error_insert.excluded[name]
            for name in ("run_id", "hook", "error_type", "message", "traceback", "occurred_at")
        },
    },
).returning(hook_errors.c.count)
_OUTBOX_ROW: Select[Any] = select(outbox).where(outbox.c.id == bindparam("b_id"))
_STEP_FAILURES: Select[Any] = select(step_errors.c["count"]).where(
    step_errors.c.run_id == bindparam("b_run_id"), step_errors.c.status == bindparam("b_status")
)
_HOOK_FAILURES: Select[Any] = select(hook_errors.c["count"]).where(hook_errors.c.message_id == bindparam("b_id"))
_TAKE_CLAIM: Update = (
    outbox.update()
    .where(outbox.c.id == bindparam("b_id"))
    .values(claimed_by=bindparam("b_token"), claimed_until=bindparam("b_until", type_=UTCDateTime()))
)
_RELEASE_FAILED: Update = (
    outbox.update()
    .where(HELD_BY_TOKEN)
    .values(
        claimed_by=None,
        claimed_until=None,
        retries=bindparam("b_retries"),
        due_at=func.coalesce(bindparam("b_due_at", type_=UTCDateTime()), outbox.c.due_at),
    )
    .returning(outbox.c.run_id)
)
_DELETE_HELD: Delete = delete(outbox).where(HELD_BY_TOKEN)
# A superseded doorbell's failure is discarded with its result (see postgres.RECORD_FAILURE).
_DELETE_HELD_SUPERSEDED: Delete = _DELETE_HELD.where(outbox.c.kind == "superseded")
_RENEW_CLAIMS: Update = (
    outbox.update()
    .where(
        outbox.c.id.in_(bindparam("b_ids", expanding=True)),
        outbox.c.claimed_by.is_not(None),
        outbox.c.claimed_until < bindparam("b_until", type_=UTCDateTime()),
    )
    .values(claimed_until=bindparam("b_until", type_=UTCDateTime()))
)
_RENEW_SLOTS: Update = (
    step_slots.update()
    .where(
        step_slots.c.holder.in_(bindparam("b_ids", expanding=True)),
        step_slots.c.expires_at < bindparam("b_until", type_=UTCDateTime()),
    )
    .values(expires_at=bindparam("b_until", type_=UTCDateTime()))
)
_RESET_ERRORS: Update = step_errors.update().where(step_errors.c.run_id == bindparam("b_run_id")).values(count=0)
_INSERT_OUTBOX = sqlite_insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.id])
_DELETE_OUTBOX: Delete = delete(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
_SLOTS_TAKEN = select(step_slots.c.slot).where(
    step_slots.c.workflow_name == bindparam("b_workflow_name"),
    step_slots.c.status == bindparam("b_status"),
    step_slots.c.expires_at >= bindparam("b_now"),
)
_TAKE_SLOT = sqlite_insert(step_slots).on_conflict_do_update(
    index_elements=[step_slots.c.workflow_name, step_slots.c.status, step_slots.c.slot],
    set_={
        "holder": sqlite_insert(step_slots).excluded.holder,
        "expires_at": sqlite_insert(step_slots).excluded.expires_at,
    },
)
_sq_error_insert = sqlite_insert(step_errors)
_RECORD_ERROR = _sq_error_insert.on_conflict_do_update(
    index_elements=[step_errors.c.run_id, step_errors.c.status],
    set_={
        "count": step_errors.c.count + 1,
        "error_type": _sq_error_insert.excluded.error_type,
        "message": _sq_error_insert.excluded.message,
        "traceback": _sq_error_insert.excluded.traceback,
        "occurred_at": _sq_error_insert.excluded.occurred_at,
    },
).returning(step_errors.c.count)


# A step doorbell whose attempt still runs when an operator or a callback moves the run.
_SUPERSEDE_RUNNING: Update = (
    outbox.update()
    .where(
        outbox.c.run_id == bindparam("b_run_id"),
        outbox.c.kind == "step",
        outbox.c.claimed_until > bindparam("b_now", type_=UTCDateTime()),
    )
    .values(kind="superseded")
)
_SUPERSEDED_RUNNING: Select[Any] = select(outbox.c.id).where(
    outbox.c.run_id == bindparam("b_run_id"),
    outbox.c.kind == "superseded",
    outbox.c.id != bindparam("b_id"),
    outbox.c.claimed_until > bindparam("b_now", type_=UTCDateTime()),
)


class SQLiteWrites:
    """The store's writes on SQLite; see ``SQLStore`` for what each one means."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        with self._c.write() as conn:
            conn.execute(_INSERT_RECORD, record_params(record))
            conn.execute(_INSERT_HISTORY, history_params(record))
            if outbox:
                conn.execute(_UPSERT_OUTBOX, [outbox_params(m) for m in unique(outbox)])

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        reset_errors: bool,
        keep_running: bool,
    ) -> bool:
        params = record_params(record)
        params["b_run_id"] = record.run_id
        params["b_expected_version"] = expected_version
        with self._c.write() as conn:
            if conn.execute(_UPDATE_RECORD, params).rowcount != 1:
                conn.rollback()
                return False
            conn.execute(_INSERT_HISTORY, history_params(record))
            if keep_running:
                conn.execute(_SUPERSEDE_RUNNING, {"b_run_id": record.run_id, "b_now": record.updated_at})
            conn.execute(_DELETE_STEP_DOORBELLS, {"b_run_id": record.run_id})
            conn.execute(_DELETE_OTHER_ERRORS, {"b_run_id": record.run_id, "b_status": int(record.status)})
            if reset_errors:
                conn.execute(_RESET_ERRORS, {"b_run_id": record.run_id})
            if outbox:
                conn.execute(_UPSERT_OUTBOX, [outbox_params(m) for m in unique(outbox)])
            return True

    def claim_due_outbox(
        self, now: datetime, limit: int, redeliver_after: timedelta, max_interval: timedelta
    ) -> list[OutboxMessage]:
        with self._c.write() as conn:
            claimed = [to_message(row) for row in conn.execute(_CLAIM_DUE_SELECT, {"b_now": now, "b_limit": limit})]
            if claimed:
                conn.execute(
                    _CLAIM_DUE_BUMP,
                    [
                        {
                            "b_id": m.id,
                            "b_due_at": now + backoff(redeliver_after, max_interval, m.attempts + 1, jitter=False),
                            "b_attempts": m.attempts + 1,
                        }
                        for m in claimed
                    ],
                )
        return claimed

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        with self._c.write() as conn:
            conn.execute(_INSERT_OUTBOX, [outbox_params(m) for m in unique(messages, keep="first")])

    def delete_outbox(self, message_ids: Sequence[str]) -> None:
        with self._c.write() as conn:
            conn.execute(_DELETE_OUTBOX, {"b_ids": list(message_ids)})

    def claim(
        self,
        message_id: str,
        run_id: str,
        version: int | None,
        token: str,
        now: datetime,
        until: datetime,
        attempt: int | None,
    ) -> Claim:
        with self._c.write() as conn:
            found = conn.execute(LOOKUP, {"b_run_id": run_id}).first()
            record = to_record(found) if found is not None else None
            outbox_row = conn.execute(_OUTBOX_ROW, {"b_id": message_id}).first()
            doorbell = to_message(outbox_row) if outbox_row is not None else None
            if doorbell is not None and doorbell.kind == "hook":
                failures = conn.execute(_HOOK_FAILURES, {"b_id": message_id}).scalar()
            elif record is not None:
                failures = conn.execute(_STEP_FAILURES, {"b_run_id": run_id, "b_status": record.status}).scalar()
            else:
                failures = 0
            current = version is None or (record is not None and record.meta.version == version)
            held = doorbell is not None and doorbell.claimed_until is not None and doorbell.claimed_until > now
            if doorbell is not None and doorbell.kind != "hook" and not held:
                held = (
                    conn.execute(_SUPERSEDED_RUNNING, {"b_run_id": run_id, "b_id": message_id, "b_now": now}).first()
                    is not None
                )
            expected = doorbell is not None and (attempt is None or attempt == doorbell.retries + 1)
            if doorbell is None or not current or held or not expected:
                return Claim(record=record, doorbell=doorbell, claimed=False, abandoned=False, failures=failures or 0)
            assert outbox_row is not None
            conn.execute(_TAKE_CLAIM, {"b_id": message_id, "b_token": token, "b_until": until})
            return Claim(
                record=record,
                doorbell=replace(doorbell, claimed_until=until),
                claimed=True,
                abandoned=outbox_row.claimed_by is not None,
                failures=failures or 0,
            )

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        with self._c.write() as conn:
            params = {"b_ids": list(message_ids), "b_until": until}
            conn.execute(_RENEW_CLAIMS, params)
            conn.execute(_RENEW_SLOTS, params)

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        with self._c.write() as conn:
            if conn.execute(_DELETE_HELD, {"b_id": message_id, "b_token": token}).rowcount != 1:
                return False
            if messages:
                conn.execute(_UPSERT_OUTBOX, [outbox_params(m) for m in unique(messages)])
            return True

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        with self._c.write() as conn:
            taken = set(
                conn.execute(_SLOTS_TAKEN, {"b_workflow_name": workflow_name, "b_status": status, "b_now": now})
                .scalars()
                .all()
            )
            free = next((slot for slot in range(limit) if slot not in taken), None)
            if free is None:
                return False
            conn.execute(
                _TAKE_SLOT,
                {
                    "workflow_name": workflow_name,
                    "status": status,
                    "slot": free,
                    "holder": holder,
                    "expires_at": expires_at,
                },
            )
            return True

    def count_failure(
        self,
        hook: bool,
        params: dict[str, Any],
        message_id: str,
        token: str,
        due_at: datetime | None,
        retries: int,
    ) -> int | None:
        with self._c.write() as conn:
            held = {"b_id": message_id, "b_token": token}
            if not hook and conn.execute(_DELETE_HELD_SUPERSEDED, held).rowcount:
                return None
            released = conn.execute(_RELEASE_FAILED, {**held, "b_retries": retries, "b_due_at": due_at}).first()
            if released is None:
                return None
            params = {"message_id": message_id, "run_id": released.run_id, **params}
            return int(conn.execute(_RECORD_HOOK_ERROR if hook else _RECORD_ERROR, params).scalar_one())

    def record_error(self, params: dict[str, Any]) -> int:
        with self._c.write() as conn:
            return int(conn.execute(_RECORD_ERROR, params).scalar_one())

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._c.write() as conn:
            conn.execute(dead_letter_sql.SQLITE_INSERT, dead_letter_sql.params(letter))
