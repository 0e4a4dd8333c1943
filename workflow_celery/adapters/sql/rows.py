"""Rows and parameters: how records, doorbells, claims and errors are written to and read from SQL.

Shared by both dialects, with the classification of the driver errors that
the store turns into the library's own (a broken unique index, a missing
schema, a lost connection).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError

from ...core.errors import SerializationError
from ...core.ports import Claim, ErrorInfo, OutboxKind, OutboxMessage
from ...core.record import HistoryEntry, Meta, Record
from ...core.run_state import RunState
from .schema import IN_PROGRESS_INDEX, RECORDS_PK, to_utc


def object_text(record: Record) -> str:
    try:
        return bytes(record.object).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationError(
            "object is not UTF-8 JSON", workflow=record.workflow_name, run_id=record.run_id
        ) from exc


def record_params(record: Record) -> dict[str, Any]:
    meta = record.meta
    return {
        "run_id": record.run_id,
        "workflow_name": record.workflow_name,
        "foreign_id": record.foreign_id,
        "run_state": int(record.run_state),
        "status": int(record.status),
        "object": object_text(record),
        "created_at": to_utc(record.created_at),
        "updated_at": to_utc(record.updated_at),
        "version": meta.version,
        "run_state_reason": meta.run_state_reason,
        "status_description": meta.status_description,
        "trace_origin": meta.trace_origin,
    }


def history_params(record: Record) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "version": record.meta.version,
        "status": int(record.status),
        "run_state": int(record.run_state),
        "object": object_text(record),
        "reason": record.meta.run_state_reason,
        "created_at": to_utc(record.updated_at),
    }


def unique(messages: Sequence[OutboxMessage], *, keep: str = "last") -> list[OutboxMessage]:
    # Upserts: the last message with an id wins, as with repeated assignments to
    # a dict (and touching one row twice in a statement is an error on
    # PostgreSQL). Inserts that skip existing ids keep the first, as setdefault.
    if len({m.id for m in messages}) == len(messages):
        return list(messages)
    if keep == "first":
        return list({m.id: m for m in reversed(messages)}.values())[::-1]
    return list({m.id: m for m in messages}.values())


def outbox_params(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "workflow_name": message.workflow_name,
        "run_id": message.run_id,
        "kind": message.kind,
        "queue": message.queue,
        "task": message.task,
        "body": message.body_json(),
        "created_at": to_utc(message.created_at),
        "due_at": to_utc(message.due_at),
        "attempts": message.attempts,
        "retries": message.retries,
    }


def outbox_json(messages: Sequence[OutboxMessage], *, keep: str = "last") -> dict[str, str]:
    """The doorbells as the one parameter ``o_rows``: a JSON array of objects, one per outbox row.

    Times are ISO 8601 with their UTC offset, read back to the microsecond by
    PostgreSQL; ``body`` is the body's JSON text, stored as it is.
    """
    rows = [
        {
            "id": m.id,
            "workflow_name": m.workflow_name,
            "run_id": m.run_id,
            "kind": m.kind,
            "queue": m.queue,
            "task": m.task,
            "body": m.body_json(),
            "created_at": to_utc(m.created_at).isoformat(),
            "due_at": to_utc(m.due_at).isoformat(),
            "attempts": m.attempts,
            "retries": m.retries,
        }
        for m in unique(messages, keep=keep)
    ]
    return {"o_rows": json.dumps(rows, separators=(",", ":"))}


def to_record(row: Row[Any]) -> Record:
    return record_from(row._mapping)


def record_from(m: Mapping[Any, Any]) -> Record:
    """The ``Record`` a row of ``workflow_records`` (as a mapping of its columns) holds."""
    return Record(
        workflow_name=m["workflow_name"],
        foreign_id=m["foreign_id"],
        run_id=m["run_id"],
        run_state=RunState(m["run_state"]),
        status=m["status"],
        object=m["object"].encode("utf-8"),
        created_at=to_utc(m["created_at"]),
        updated_at=to_utc(m["updated_at"]),
        meta=Meta(
            version=m["version"],
            run_state_reason=m["run_state_reason"],
            status_description=m["status_description"],
            trace_origin=m["trace_origin"],
        ),
    )


def to_message(row: Row[Any], prefix: str = "") -> OutboxMessage:
    return message_from(row._mapping, prefix)


def message_from(m: Mapping[Any, Any], prefix: str = "") -> OutboxMessage:
    body: Mapping[str, Any] = json.loads(m[prefix + "body"])
    claimed_until = m.get(prefix + "claimed_until")
    return OutboxMessage(
        id=m[prefix + "id"],
        workflow_name=m[prefix + "workflow_name"],
        run_id=m[prefix + "run_id"],
        kind=cast(OutboxKind, m[prefix + "kind"]),
        queue=m[prefix + "queue"],
        task=m[prefix + "task"],
        body=body,
        created_at=to_utc(m[prefix + "created_at"]),
        due_at=to_utc(m[prefix + "due_at"]),
        attempts=m[prefix + "attempts"],
        retries=m[prefix + "retries"],
        claimed_until=None if claimed_until is None else to_utc(claimed_until),
    )


def claim_from_row(m: Mapping[Any, Any], until: datetime) -> Claim:
    """The ``Claim`` that the one row of the PostgreSQL claim statement describes (as a mapping)."""
    record = record_from(m) if m["run_id"] is not None else None
    claimed = bool(m["claimed"])
    doorbell = message_from(m, "o_") if m["o_id"] is not None else None
    if doorbell is not None and claimed:
        doorbell = replace(doorbell, claimed_until=until)
    abandoned = claimed and bool(m["abandoned"])
    hook = doorbell is not None and doorbell.kind == "hook"
    failures = (m["hook_failures"] if hook else m["step_failures"]) or 0
    return Claim(record=record, doorbell=doorbell, claimed=claimed, abandoned=abandoned, failures=failures)


def violated_constraint(exc: IntegrityError) -> str | None:
    """Name of the index or key an insert or update broke, on either dialect."""
    name = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if isinstance(name, str):
        return name
    message = str(exc.orig)
    # SQLite names the columns: "UNIQUE constraint failed: t.a, t.b".
    if "workflow_records.workflow_name, workflow_records.foreign_id" in message:
        return IN_PROGRESS_INDEX
    if "UNIQUE constraint failed: workflow_records.run_id" in message:
        return RECORDS_PK
    return None


# PostgreSQL's undefined_table and undefined_column; SQLite says it in words.
_PG_UNDEFINED_SQLSTATES = ("42P01", "42703")
_SQLITE_UNDEFINED = ("no such table", "no such column", "has no column named")


def schema_missing(exc: DBAPIError) -> bool:
    """Whether a statement failed because the schema was never created, or is older than this code."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _PG_UNDEFINED_SQLSTATES
    return isinstance(exc.orig, sqlite3.OperationalError) and any(s in str(exc.orig) for s in _SQLITE_UNDEFINED)


# PostgreSQL's connection_exception class, and admin_shutdown, crash_shutdown, cannot_connect_now.
_PG_CONNECTION_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def connection_gone(exc: DBAPIError) -> bool:
    """Whether a statement failed because its connection went away, whether or not SQLAlchemy noticed.

    The server's "terminating connection" error can be read before the end of
    the stream, and then the driver does not yet call the connection broken.
    """
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return (
        exc.connection_invalidated
        or (isinstance(sqlstate, str) and sqlstate.startswith(_PG_CONNECTION_GONE_SQLSTATES))
        or driver_lost(exc.orig, None)
    )


# What psycopg says when the socket went away under a statement, before it marks the connection broken.
_PG_LOST_WORDS = ("connection socket closed", "server closed the connection unexpectedly", "consuming input failed")


def driver_lost(orig: BaseException | None, driver: Any) -> bool:
    """Whether the driver's error (or its connection, if given) says the connection itself is gone."""
    if driver is not None and (getattr(driver, "closed", False) or getattr(driver, "broken", False)):
        return True
    return orig is not None and any(words in str(orig) for words in _PG_LOST_WORDS)


def error_params(error: ErrorInfo) -> dict[str, Any]:
    """The columns a new error counter row gets from one failure."""
    return {
        "count": 1,
        "error_type": error.error_type,
        "message": error.message,
        "traceback": error.traceback,
        "occurred_at": to_utc(error.occurred_at),
    }


def error_info(row: Row[Any]) -> ErrorInfo:
    return ErrorInfo(
        error_type=row.error_type,
        message=row.message,
        traceback=row.traceback,
        occurred_at=to_utc(row.occurred_at),
    )


def history_entry(row: Row[Any]) -> HistoryEntry:
    return HistoryEntry(
        run_id=row.run_id,
        version=row.version,
        status=row.status,
        run_state=RunState(row.run_state),
        object=row.object.encode("utf-8"),
        reason=row.reason,
        created_at=to_utc(row.created_at),
    )
