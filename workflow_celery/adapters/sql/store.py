"""``SQLStore``: the record store on PostgreSQL (production) or SQLite (one host).

PostgreSQL: every method is a single statement sent on an autocommit
connection, so each is atomic and costs one round trip; the multi-table
writes use data-modifying CTEs and pass doorbells as arrays (``unnest``), so
their SQL text never changes and psycopg can prepare it once per connection.

SQLite: plain statements inside ``BEGIN IMMEDIATE`` transactions. Taking the
write lock up front (instead of on the first write) means a writer waits for
the busy timeout rather than failing with "database is locked" when it has
read a snapshot that another writer made stale.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from select import POLLIN, poll
from typing import Any, cast

from sqlalchemy import (
    Delete,
    Executable,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    make_url,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.pool import StaticPool

from ...core.dead_letters import DeadLetter
from ...core.errors import (
    ConfigurationError,
    DatabaseConnectionLost,
    RecordNotFound,
    SchemaMissing,
    SerializationError,
    WorkflowInProgress,
)
from ...core.ports import Claim, ErrorInfo, HookErrors, Order, OutboxKind, OutboxMessage, StepErrors
from ...core.record import HistoryEntry, Meta, Record
from ...core.run_state import IN_PROGRESS_VALUES, RunState
from ...core.text import MAX_NAME_LENGTH, storable_text
from . import dead_letters as dead_letter_sql
from . import migrate
from .schema import (
    IN_PROGRESS_INDEX,
    RECORDS_PK,
    UTCDateTime,
    history,
    hook_errors,
    outbox,
    records,
    step_errors,
    step_slots,
    to_utc,
)

__all__ = ["SQLStore", "make_engine"]

SQLITE_BUSY_TIMEOUT_S = 30.0

# --------------------------------------------------------------------------- engines


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine configured the way the store needs it.

    ``postgresql://`` URLs get the psycopg 3 driver. SQLite connections may be
    used from any thread, wait up to 30 s for the write lock, and file
    databases use WAL so readers never block the writer; an in-memory
    database is a single shared connection (a second one would be a second,
    empty database).
    """
    if url in (":memory:", "sqlite://:memory:"):
        url = "sqlite://"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        if in_memory:
            engine = create_engine(parsed, echo=echo, poolclass=StaticPool, connect_args=connect_args)
        else:
            engine = create_engine(parsed, echo=echo, pool_size=pool_size, connect_args=connect_args)
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    if backend == "postgresql":
        engine = create_engine(parsed, echo=echo, pool_size=pool_size)
        event.listen(engine, "checkout", _closed_by_server)
        return engine
    raise ConfigurationError(f"unsupported database {backend!r}: use postgresql or sqlite")


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if wal:
                _enable_wal(cursor)
        finally:
            cursor.close()


def _closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled PostgreSQL connection the server has closed, before any statement is sent on it.

    An idle connection has nothing to read. When the server closes it (a
    restart, a failover, ``pg_terminate_backend``, an idle timeout) it first
    sends the reason and then the end of the stream, so the socket becomes
    readable: one ``poll`` with no wait, no round trip. Raising
    ``DisconnectionError`` here makes SQLAlchemy's pool open a new connection
    instead (its documented pessimistic disconnect handling), so the statement
    runs once, on a live connection. A connection that dies without a word
    (a host gone from the network) is not seen here; a statement on it fails
    with ``DatabaseConnectionLost``, and is never sent again on its own.
    """
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return
    try:
        fd = pgconn.socket
    except Exception:
        raise DisconnectionError("the connection is closed") from None
    poller = poll()
    poller.register(fd, POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection, or sent something while it was idle")


def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("SET synchronous_commit TO off")
    finally:
        dbapi_connection.autocommit = autocommit


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file: once set it stays. Switching needs an
    # exclusive lock, and SQLite reports "database is locked" at once (without
    # consulting the busy timeout) when another connection holds any lock, as
    # happens when several processes open a new database together.
    # The result is not checked: a file system without shared memory keeps the
    # old mode, which is slower but correct.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# Celery's prefork pool forks after the parent may have opened connections; a
# child reusing the parent's socket would interleave bytes with it.
_STORES: weakref.WeakSet[SQLStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- PostgreSQL statements

_OUTBOX_COLUMNS = "id, workflow_name, run_id, kind, queue, task, body, created_at, due_at, attempts, retries"

# One row per doorbell, from parallel arrays: a fixed statement whatever their number.
_PG_OUTBOX_ROWS = """unnest(
        CAST(:o_id AS text[]), CAST(:o_workflow_name AS text[]), CAST(:o_run_id AS text[]),
        CAST(:o_kind AS text[]), CAST(:o_queue AS text[]), CAST(:o_task AS text[]), CAST(:o_body AS text[]),
        CAST(:o_created_at AS timestamptz[]), CAST(:o_due_at AS timestamptz[]), CAST(:o_attempts AS integer[]),
        CAST(:o_retries AS integer[])
    ) AS m(id, workflow_name, run_id, kind, queue, task, body, created_at, due_at, attempts, retries)"""

_PG_OUTBOX_ON_CONFLICT = """ON CONFLICT (id) DO UPDATE SET
        workflow_name = EXCLUDED.workflow_name, run_id = EXCLUDED.run_id, kind = EXCLUDED.kind,
        queue = EXCLUDED.queue, task = EXCLUDED.task, body = EXCLUDED.body,
        created_at = EXCLUDED.created_at, due_at = EXCLUDED.due_at, attempts = EXCLUDED.attempts,
        retries = EXCLUDED.retries, claimed_by = NULL, claimed_until = NULL"""

_PG_INSERT_RUN = text(f"""
WITH r AS (
    INSERT INTO workflow_records (run_id, workflow_name, foreign_id, run_state, status, object, created_at,
                                  updated_at, version, run_state_reason, status_description, trace_origin)
    VALUES (:run_id, :workflow_name, :foreign_id, :run_state, :status, :object, :created_at,
            :updated_at, :version, :run_state_reason, :status_description, :trace_origin)
    RETURNING run_id, version, status, run_state, object, run_state_reason, updated_at
), h AS (
    INSERT INTO workflow_history (run_id, version, status, run_state, object, reason, created_at)
    SELECT run_id, version, status, run_state, object, run_state_reason, updated_at FROM r
), o AS (
    INSERT INTO workflow_outbox ({_OUTBOX_COLUMNS})
    SELECT m.* FROM r CROSS JOIN {_PG_OUTBOX_ROWS}
    {_PG_OUTBOX_ON_CONFLICT}
)
SELECT count(*) FROM r
""")

# Every sub-statement joins ``u``, so a lost compare-and-set writes nothing. All
# of them see the snapshot taken before the statement, and the order in which
# they run is unspecified, so no two may touch the same row: the DELETE of
# superseded step doorbells skips the new ids (``o`` replaces those by upsert,
# as a delete followed by an insert would), and the counter reset ``z`` only
# touches the status that ``d2`` keeps.
_PG_UPDATE_RUN = text(f"""
WITH u AS (
    UPDATE workflow_records SET
        workflow_name = :workflow_name, foreign_id = :foreign_id, run_state = :run_state, status = :status,
        object = :object, created_at = :created_at, updated_at = :updated_at, version = :version,
        run_state_reason = :run_state_reason, status_description = :status_description,
        trace_origin = :trace_origin
    WHERE run_id = :run_id AND version = :expected_version
    RETURNING run_id, version, status, run_state, object, run_state_reason, updated_at
), h AS (
    INSERT INTO workflow_history (run_id, version, status, run_state, object, reason, created_at)
    SELECT run_id, version, status, run_state, object, run_state_reason, updated_at FROM u
), d1 AS (
    DELETE FROM workflow_outbox AS x USING u
    WHERE x.run_id = u.run_id AND x.kind = 'step' AND x.id <> ALL(CAST(:o_id AS text[]))
), d2 AS (
    DELETE FROM workflow_step_errors AS e USING u
    WHERE e.run_id = u.run_id AND e.status <> u.status
), z AS (
    UPDATE workflow_step_errors AS e SET count = 0 FROM u
    WHERE CAST(:reset_errors AS boolean) AND e.run_id = u.run_id AND e.status = u.status
), o AS (
    INSERT INTO workflow_outbox ({_OUTBOX_COLUMNS})
    SELECT m.* FROM u CROSS JOIN {_PG_OUTBOX_ROWS}
    {_PG_OUTBOX_ON_CONFLICT}
)
SELECT count(*) FROM u
""")

# SKIP LOCKED hands each due row to one caller; a row another caller has just
# claimed and committed is re-checked against ``due_at <= :now`` on its new
# version (READ COMMITTED), so it is not claimed twice in one period either.
# A row whose work is running (an unexpired claim) is not rung. The exponent is
# capped only to keep numeric arithmetic small; the cap on the interval itself
# is ``max_us``.
_PG_CLAIM_DUE = text(f"""
WITH c AS (
    SELECT id, due_at, attempts FROM workflow_outbox
    WHERE due_at <= :now AND (claimed_until IS NULL OR claimed_until <= :now)
    ORDER BY due_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE workflow_outbox AS x SET
        due_at = :now + CAST(LEAST(CAST(:redeliver_us AS numeric) * power(2::numeric, LEAST(c.attempts, 100)),
                                   CAST(:max_us AS numeric)) AS bigint) * interval '1 microsecond',
        attempts = c.attempts + 1
    FROM c
    WHERE x.id = c.id
    RETURNING x.id, x.workflow_name, x.run_id, x.kind, x.queue, x.task, x.body, x.created_at,
              c.due_at, c.attempts, x.retries, x.claimed_until
)
SELECT {_OUTBOX_COLUMNS}, claimed_until FROM u ORDER BY due_at, id
""")

_PG_INSERT_OUTBOX = text(f"""
INSERT INTO workflow_outbox ({_OUTBOX_COLUMNS})
SELECT m.* FROM {_PG_OUTBOX_ROWS}
ON CONFLICT (id) DO NOTHING
""")

_PG_DELETE_OUTBOX = text("DELETE FROM workflow_outbox WHERE id = ANY(CAST(:ids AS text[]))")

# One round trip answers "may I run this doorbell's work?": the run, the row,
# the claim itself, and the failures counted so far. The UPDATE takes the
# row's lock, and a concurrent claimer waits for it and re-checks the WHERE on
# the row as the first left it, so at most one gets the claim. ``abandoned`` is
# computed from the row being replaced: a holder there whose claim expired
# never let go, so its attempt died. When nothing is claimed, the row is read
# as it was when the statement began, which is all a loser needs to know.
_PG_CLAIM = text("""
WITH r AS (
    SELECT * FROM workflow_records WHERE run_id = :run_id
), c AS (
    UPDATE workflow_outbox AS o
    SET claimed_by = :token, claimed_until = :until, abandoned = (o.claimed_by IS NOT NULL)
    WHERE o.id = :id
      AND (o.claimed_until IS NULL OR o.claimed_until <= :now)
      AND (CAST(:attempt AS integer) IS NULL OR o.retries + 1 = CAST(:attempt AS integer))
      AND (CAST(:version AS integer) IS NULL
           OR EXISTS (SELECT 1 FROM r WHERE r.version = CAST(:version AS integer)))
    RETURNING o.id, o.retries, o.abandoned
)
SELECT r.run_id, r.workflow_name, r.foreign_id, r.run_state, r.status, r.object, r.created_at, r.updated_at,
       r.version, r.run_state_reason, r.status_description, r.trace_origin,
       o.id AS o_id, o.workflow_name AS o_workflow_name, o.run_id AS o_run_id, o.kind AS o_kind,
       o.queue AS o_queue, o.task AS o_task, o.body AS o_body, o.created_at AS o_created_at,
       o.due_at AS o_due_at, o.attempts AS o_attempts, COALESCE(c.retries, o.retries) AS o_retries,
       o.claimed_until AS o_claimed_until,
       c.id IS NOT NULL AS claimed, COALESCE(c.abandoned, FALSE) AS abandoned,
       (SELECT e.count FROM workflow_step_errors e WHERE e.run_id = :run_id AND e.status = r.status) AS step_failures,
       (SELECT h.count FROM workflow_hook_errors h WHERE h.message_id = :id) AS hook_failures
FROM (SELECT 1) AS one
LEFT JOIN r ON TRUE
LEFT JOIN workflow_outbox AS o ON o.id = :id
LEFT JOIN c ON TRUE
""")

_PG_RENEW_CLAIMS = text("""
WITH o AS (
    UPDATE workflow_outbox SET claimed_until = GREATEST(claimed_until, :until)
    WHERE id = ANY(CAST(:ids AS text[])) AND claimed_by IS NOT NULL
), s AS (
    UPDATE workflow_step_slots SET expires_at = GREATEST(expires_at, :until)
    WHERE holder = ANY(CAST(:ids AS text[]))
)
SELECT 1
""")

_PG_REPLACE_DOORBELL = text(f"""
WITH d AS (
    DELETE FROM workflow_outbox WHERE id = :id AND claimed_by = :token RETURNING id
), o AS (
    INSERT INTO workflow_outbox ({_OUTBOX_COLUMNS})
    SELECT m.* FROM d CROSS JOIN {_PG_OUTBOX_ROWS}
    {_PG_OUTBOX_ON_CONFLICT}
)
SELECT count(*) FROM d
""")

# The count is kept only while the caller holds the doorbell: a claim that
# expired and was taken by another attempt, or a row the run's next write
# deleted, means this attempt no longer speaks for the work.
_PG_RECORD_FAILURE = text("""
WITH o AS (
    UPDATE workflow_outbox SET claimed_by = NULL, claimed_until = NULL, retries = :retries,
        due_at = COALESCE(CAST(:due_at AS timestamptz), due_at)
    WHERE id = :id AND claimed_by = :token
    RETURNING id
), e AS (
    INSERT INTO workflow_step_errors (run_id, status, count, error_type, message, traceback, occurred_at)
    SELECT :run_id, :status, 1, :error_type, :message, :traceback, :occurred_at FROM o
    ON CONFLICT (run_id, status) DO UPDATE SET
        count = workflow_step_errors.count + 1, error_type = EXCLUDED.error_type,
        message = EXCLUDED.message, traceback = EXCLUDED.traceback, occurred_at = EXCLUDED.occurred_at
    RETURNING count
)
SELECT count FROM e
""")

_PG_RECORD_ERROR = text("""
INSERT INTO workflow_step_errors (run_id, status, count, error_type, message, traceback, occurred_at)
VALUES (:run_id, :status, 1, :error_type, :message, :traceback, :occurred_at)
ON CONFLICT (run_id, status) DO UPDATE SET
    count = workflow_step_errors.count + 1, error_type = EXCLUDED.error_type,
    message = EXCLUDED.message, traceback = EXCLUDED.traceback, occurred_at = EXCLUDED.occurred_at
RETURNING count
""")

_PG_RECORD_HOOK_FAILURE = text("""
WITH o AS (
    UPDATE workflow_outbox SET claimed_by = NULL, claimed_until = NULL, retries = :retries, due_at = :due_at
    WHERE id = :id AND claimed_by = :token
    RETURNING id, run_id
), e AS (
    INSERT INTO workflow_hook_errors (message_id, run_id, hook, count, error_type, message, traceback, occurred_at)
    SELECT o.id, o.run_id, :hook, 1, :error_type, :message, :traceback, :occurred_at FROM o
    ON CONFLICT (message_id) DO UPDATE SET
        count = workflow_hook_errors.count + 1, run_id = EXCLUDED.run_id, hook = EXCLUDED.hook,
        error_type = EXCLUDED.error_type, message = EXCLUDED.message, traceback = EXCLUDED.traceback,
        occurred_at = EXCLUDED.occurred_at
    RETURNING count
)
SELECT count FROM e
""")

# --------------------------------------------------------------------------- portable statements

_LOOKUP: Select[Any] = select(records).where(records.c.run_id == bindparam("b_run_id"))
_LATEST: Select[Any] = (
    select(records)
    .where(records.c.workflow_name == bindparam("b_workflow"), records.c.foreign_id == bindparam("b_foreign_id"))
    .order_by(records.c.created_at.desc(), records.c.run_id.desc())
    .limit(1)
)
_HISTORY: Select[Any] = select(history).where(history.c.run_id == bindparam("b_run_id")).order_by(history.c.version)
_OUTBOX_ALL: Select[Any] = select(outbox).order_by(outbox.c.created_at, outbox.c.id)
_OUTBOX_OF_RUN: Select[Any] = _OUTBOX_ALL.where(outbox.c.run_id == bindparam("b_run_id"))
_ERRORS: Select[Any] = (
    select(step_errors).where(step_errors.c.run_id == bindparam("b_run_id")).order_by(step_errors.c.status)
)
_HOOK_ERRORS: Select[Any] = (
    select(hook_errors).where(hook_errors.c.run_id == bindparam("b_run_id")).order_by(hook_errors.c.message_id)
)
_SCRUB_HISTORY: Update = (
    history.update().where(history.c.run_id == bindparam("b_run_id")).values(object=bindparam("b_object"))
)
_STRANDED: Select[Any] = (
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
_IN_PROGRESS_OF: Select[Any] = (
    select(records.c.run_id)
    .where(
        records.c.workflow_name == bindparam("b_workflow"),
        records.c.foreign_id == bindparam("b_foreign_id"),
        records.c.run_state.in_(IN_PROGRESS_VALUES),
        records.c.run_id != bindparam("b_exclude"),
    )
    .limit(1)
)

# --------------------------------------------------------------------------- SQLite statements

_SQ_INSERT_RECORD: Insert = records.insert()
_SQ_INSERT_HISTORY: Insert = history.insert()
_SQ_UPDATE_RECORD: Update = records.update().where(
    records.c.run_id == bindparam("b_run_id"), records.c.version == bindparam("b_expected_version")
)
_SQ_DELETE_STEP_DOORBELLS: Delete = delete(outbox).where(
    outbox.c.run_id == bindparam("b_run_id"), outbox.c.kind == "step"
)
_SQ_DELETE_OTHER_ERRORS: Delete = delete(step_errors).where(
    step_errors.c.run_id == bindparam("b_run_id"), step_errors.c.status != bindparam("b_status")
)
_sq_outbox_insert = sqlite_insert(outbox)
_SQ_UPSERT_OUTBOX = _sq_outbox_insert.on_conflict_do_update(
    index_elements=[outbox.c.id],
    set_={c.name: _sq_outbox_insert.excluded[c.name] for c in outbox.c if c.name != "id"},
)
_SQ_CLAIM_DUE_SELECT: Select[Any] = (
    select(outbox)
    .where(
        outbox.c.due_at <= bindparam("b_now", type_=UTCDateTime()),
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= bindparam("b_now", type_=UTCDateTime())),
    )
    .order_by(outbox.c.due_at, outbox.c.id)
    .limit(bindparam("b_limit"))
)
_SQ_CLAIM_DUE_BUMP: Update = (
    outbox.update()
    .where(outbox.c.id == bindparam("b_id"))
    .values(due_at=bindparam("b_due_at", type_=UTCDateTime()), attempts=bindparam("b_attempts"))
)
_sq_hook_error_insert = sqlite_insert(hook_errors)
_SQ_RECORD_HOOK_ERROR = _sq_hook_error_insert.on_conflict_do_update(
    index_elements=[hook_errors.c.message_id],
    set_={
        "count": hook_errors.c.count + 1,
        **{
            name: _sq_hook_error_insert.excluded[name]
            for name in ("run_id", "hook", "error_type", "message", "traceback", "occurred_at")
        },
    },
).returning(hook_errors.c.count)
_SQ_OUTBOX_ROW: Select[Any] = select(outbox).where(outbox.c.id == bindparam("b_id"))
_SQ_STEP_FAILURES: Select[Any] = select(step_errors.c["count"]).where(
    step_errors.c.run_id == bindparam("b_run_id"), step_errors.c.status == bindparam("b_status")
)
_SQ_HOOK_FAILURES: Select[Any] = select(hook_errors.c["count"]).where(hook_errors.c.message_id == bindparam("b_id"))
_SQ_TAKE_CLAIM: Update = (
    outbox.update()
    .where(outbox.c.id == bindparam("b_id"))
    .values(claimed_by=bindparam("b_token"), claimed_until=bindparam("b_until", type_=UTCDateTime()))
)
_held_by_token = and_(outbox.c.id == bindparam("b_id"), outbox.c.claimed_by == bindparam("b_token"))
_RELEASE_CLAIM: Update = (
    outbox.update()
    .where(_held_by_token)
    .values(
        claimed_by=None,
        claimed_until=None,
        due_at=func.coalesce(bindparam("b_due_at", type_=UTCDateTime()), outbox.c.due_at),
    )
)
_SQ_RELEASE_FAILED: Update = (
    outbox.update()
    .where(_held_by_token)
    .values(
        claimed_by=None,
        claimed_until=None,
        retries=bindparam("b_retries"),
        due_at=func.coalesce(bindparam("b_due_at", type_=UTCDateTime()), outbox.c.due_at),
    )
    .returning(outbox.c.run_id)
)
_ABANDON_CLAIM: Update = (
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
_SQ_DELETE_HELD: Delete = delete(outbox).where(_held_by_token)
_SQ_RENEW_CLAIMS: Update = (
    outbox.update()
    .where(
        outbox.c.id.in_(bindparam("b_ids", expanding=True)),
        outbox.c.claimed_by.is_not(None),
        outbox.c.claimed_until < bindparam("b_until", type_=UTCDateTime()),
    )
    .values(claimed_until=bindparam("b_until", type_=UTCDateTime()))
)
_SQ_RENEW_SLOTS: Update = (
    step_slots.update()
    .where(
        step_slots.c.holder.in_(bindparam("b_ids", expanding=True)),
        step_slots.c.expires_at < bindparam("b_until", type_=UTCDateTime()),
    )
    .values(expires_at=bindparam("b_until", type_=UTCDateTime()))
)
_SQ_RESET_ERRORS: Update = step_errors.update().where(step_errors.c.run_id == bindparam("b_run_id")).values(count=0)
_SQ_INSERT_OUTBOX = sqlite_insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.id])
_SQ_DELETE_OUTBOX: Delete = delete(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
# One statement: pick a slot nobody holds (or whose lease expired) and take it. Two callers
# picking the same slot meet in ON CONFLICT; the loser's WHERE sees the fresh lease and gets
# no row back, so it counts as busy: never more than ``limit`` holders.
_PG_ACQUIRE_SLOT = text("""
WITH free AS (
    SELECT s AS slot FROM generate_series(0, CAST(:limit AS integer) - 1) AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM workflow_step_slots t
        WHERE t.workflow_name = :workflow_name AND t.status = :status AND t.slot = s AND t.expires_at >= :now
    )
    ORDER BY random()
    LIMIT 1
)
INSERT INTO workflow_step_slots (workflow_name, status, slot, holder, expires_at)
SELECT :workflow_name, :status, slot, :holder, :expires_at FROM free
ON CONFLICT (workflow_name, status, slot) DO UPDATE
    SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE workflow_step_slots.expires_at < :now
RETURNING slot
""")
_SLOTS_TAKEN = select(step_slots.c.slot).where(
    step_slots.c.workflow_name == bindparam("b_workflow_name"),
    step_slots.c.status == bindparam("b_status"),
    step_slots.c.expires_at >= bindparam("b_now"),
)
_SQ_TAKE_SLOT = sqlite_insert(step_slots).on_conflict_do_update(
    index_elements=[step_slots.c.workflow_name, step_slots.c.status, step_slots.c.slot],
    set_={
        "holder": sqlite_insert(step_slots).excluded.holder,
        "expires_at": sqlite_insert(step_slots).excluded.expires_at,
    },
)
_RELEASE_SLOT: Delete = delete(step_slots).where(step_slots.c.holder == bindparam("b_holder"))
_sq_error_insert = sqlite_insert(step_errors)
_SQ_RECORD_ERROR = _sq_error_insert.on_conflict_do_update(
    index_elements=[step_errors.c.run_id, step_errors.c.status],
    set_={
        "count": step_errors.c.count + 1,
        "error_type": _sq_error_insert.excluded.error_type,
        "message": _sq_error_insert.excluded.message,
        "traceback": _sq_error_insert.excluded.traceback,
        "occurred_at": _sq_error_insert.excluded.occurred_at,
    },
).returning(step_errors.c.count)

# --------------------------------------------------------------------------- conversions


def _object_text(record: Record) -> str:
    try:
        return bytes(record.object).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationError(
            "object is not UTF-8 JSON", workflow=record.workflow_name, run_id=record.run_id
        ) from exc


def _record_params(record: Record) -> dict[str, Any]:
    meta = record.meta
    return {
        "run_id": record.run_id,
        "workflow_name": record.workflow_name,
        "foreign_id": record.foreign_id,
        "run_state": int(record.run_state),
        "status": int(record.status),
        "object": _object_text(record),
        "created_at": to_utc(record.created_at),
        "updated_at": to_utc(record.updated_at),
        "version": meta.version,
        "run_state_reason": meta.run_state_reason,
        "status_description": meta.status_description,
        "trace_origin": meta.trace_origin,
    }


def _history_params(record: Record) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "version": record.meta.version,
        "status": int(record.status),
        "run_state": int(record.run_state),
        "object": _object_text(record),
        "reason": record.meta.run_state_reason,
        "created_at": to_utc(record.updated_at),
    }


def _unique(messages: Sequence[OutboxMessage], *, keep: str = "last") -> list[OutboxMessage]:
    # Upserts: the last message with an id wins, as with repeated assignments to
    # a dict (and touching one row twice in a statement is an error on
    # PostgreSQL). Inserts that skip existing ids keep the first, as setdefault.
    if len({m.id for m in messages}) == len(messages):
        return list(messages)
    if keep == "first":
        return list({m.id: m for m in reversed(messages)}.values())[::-1]
    return list({m.id: m for m in messages}.values())


def _outbox_params(message: OutboxMessage) -> dict[str, Any]:
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


def _outbox_arrays(messages: Sequence[OutboxMessage], *, keep: str = "last") -> dict[str, list[Any]]:
    rows = _unique(messages, keep=keep)
    return {
        "o_id": [m.id for m in rows],
        "o_workflow_name": [m.workflow_name for m in rows],
        "o_run_id": [m.run_id for m in rows],
        "o_kind": [m.kind for m in rows],
        "o_queue": [m.queue for m in rows],
        "o_task": [m.task for m in rows],
        "o_body": [m.body_json() for m in rows],
        "o_created_at": [to_utc(m.created_at) for m in rows],
        "o_due_at": [to_utc(m.due_at) for m in rows],
        "o_attempts": [m.attempts for m in rows],
        "o_retries": [m.retries for m in rows],
    }


def _to_record(row: Row[Any]) -> Record:
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


def _to_message(row: Row[Any], prefix: str = "") -> OutboxMessage:
    return _message_from(row._mapping, prefix)


def _message_from(m: Mapping[Any, Any], prefix: str = "") -> OutboxMessage:
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
    doorbell = _message_from(m, "o_") if m["o_id"] is not None else None
    if doorbell is not None and claimed:
        doorbell = replace(doorbell, claimed_until=until)
    abandoned = claimed and bool(m["abandoned"])
    hook = doorbell is not None and doorbell.kind == "hook"
    failures = (m["hook_failures"] if hook else m["step_failures"]) or 0
    return Claim(record=record, doorbell=doorbell, claimed=claimed, abandoned=abandoned, failures=failures)


def _backoff(redeliver_after: timedelta, max_interval: timedelta, attempts: int) -> timedelta:
    # In integer microseconds with the exponent capped: ``timedelta * 2**n`` overflows
    # once a row has been rung some fifty times, long after the cap has taken over.
    cap = max_interval // timedelta(microseconds=1)
    wait = min((redeliver_after // timedelta(microseconds=1)) << min(attempts, 100), cap)
    return timedelta(microseconds=wait)


def _violated_constraint(exc: IntegrityError) -> str | None:
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


def _schema_missing(exc: DBAPIError) -> bool:
    """Whether a statement failed because the schema was never created, or is older than this code."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _PG_UNDEFINED_SQLSTATES
    return isinstance(exc.orig, sqlite3.OperationalError) and any(s in str(exc.orig) for s in _SQLITE_UNDEFINED)


# PostgreSQL's connection_exception class, and admin_shutdown, crash_shutdown, cannot_connect_now.
_PG_CONNECTION_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _connection_gone(exc: DBAPIError) -> bool:
    """Whether a statement failed because its connection went away, whether or not SQLAlchemy noticed.

    The server's "terminating connection" error can be read before the end of
    the stream, and then the driver does not yet call the connection broken.
    """
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or (
        isinstance(sqlstate, str) and sqlstate.startswith(_PG_CONNECTION_GONE_SQLSTATES)
    )


def _run_filters(
    workflow_name: str | None,
    status: int | None,
    run_state: RunState | None,
    foreign_id: str | None,
    run_id_prefix: str | None,
) -> list[Any]:
    where: list[Any] = []
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


# --------------------------------------------------------------------------- the store


class SQLStore:
    """A ``RecordStore`` on PostgreSQL (psycopg 3) or SQLite, semantically identical to ``MemoryStore``."""

    def __init__(self, url_or_engine: str | Engine, *, pool_size: int = 5, echo: bool = False) -> None:
        """Connect lazily to ``url_or_engine`` (a URL, or an engine the caller configured and owns)."""
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = make_engine(url_or_engine, pool_size=pool_size, echo=echo)
        dialect = self.engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise ConfigurationError(f"unsupported database {dialect!r}: use postgresql or sqlite")
        self._pg = dialect == "postgresql"
        # Each PostgreSQL method is a single statement; autocommit spares the
        # BEGIN and COMMIT round trips without giving up atomicity.
        self._autocommit: Engine = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if self._pg else self.engine
        )
        # Claims only coordinate workers while the server is up: one lost with a crash of the server
        # lets an attempt run twice, and the compare-and-set still commits it once. So they are
        # written on connections of their own that do not wait for the WAL flush, which is most of
        # what taking a claim would otherwise cost.
        self._claims: Engine = self._autocommit
        if self._pg:
            pool = self.engine.pool.recreate()
            event.listen(pool, "connect", _asynchronous_commit)
            self._claims = create_engine(self.engine.url, pool=pool, isolation_level="AUTOCOMMIT")
        # One shared in-memory connection cannot hold two transactions at once.
        self._shared_connection = isinstance(self.engine.pool, StaticPool)
        self._lock = threading.RLock()
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"SQLStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------ lifecycle

    def create_schema(self) -> None:
        """Create or upgrade the tables by running the migrations to head (idempotent, concurrency-safe)."""
        with self._guard():
            migrate.upgrade(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection; the store reconnects on its next call."""
        self.engine.dispose()
        if self._claims is not self._autocommit:
            self._claims.dispose()

    def _after_fork(self) -> None:
        # close=False: the parent still owns those sockets.
        self.engine.dispose(close=False)
        if self._claims is not self._autocommit:
            self._claims.dispose(close=False)
        self._lock = threading.RLock()

    def _guard(self) -> AbstractContextManager[Any]:
        return self._lock if self._shared_connection else nullcontext()

    @contextmanager
    def _schema_checked(self) -> Iterator[None]:
        # Without this, a store used before `db upgrade` fails with the whole SQL statement in the message.
        try:
            yield
        except DBAPIError as exc:
            if not _schema_missing(exc):
                raise
            detail = " ".join(str(exc.orig).split("\n", 1)[0].split())
            url = self.engine.url.render_as_string(hide_password=True)
            raise SchemaMissing(
                f"the database has no workflow-celery schema, or an older one ({detail}): "
                f"run `workflow-celery db upgrade --url {url}` (or call store.create_schema())"
            ) from None

    @contextmanager
    def _lost_mid_statement(self) -> Iterator[None]:
        # Only for statements on a connection already checked out: a failure to connect wrote nothing and
        # keeps SQLAlchemy's error. One lost while a statement ran may have been committed or not, and is
        # not retried: re-running a write that did commit would apply it twice.
        try:
            yield
        except DBAPIError as exc:
            if not _connection_gone(exc):
                raise
            detail = " ".join(str(exc.orig).split("\n", 1)[0].split())
            raise DatabaseConnectionLost(
                f"the connection to the database was lost while a statement ran ({detail}): it may or may not "
                "have been committed; read the run back before doing it again"
            ) from exc

    @contextmanager
    def _statement(self) -> Iterator[Connection]:
        with self._schema_checked(), self._guard(), self._autocommit.connect() as conn, self._lost_mid_statement():
            yield conn

    @contextmanager
    def _claim_statement(self) -> Iterator[Connection]:
        """A statement about claims: on PostgreSQL, committed without waiting for the WAL flush."""
        with self._schema_checked(), self._guard(), self._claims.connect() as conn, self._lost_mid_statement():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A SQLite write transaction holding the database lock from its first statement."""
        with self._schema_checked(), self._guard(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _write_one(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """One statement on its own: autocommit on PostgreSQL, a write transaction on SQLite."""
        with self._statement() if self._pg else self._write() as conn:
            conn.execute(statement, params)

    # ------------------------------------------------------------------ runs

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        """Insert a new run with its first history row and doorbells, atomically.

        Raises ``WorkflowInProgress`` when another run of the workflow for the
        same foreign id is in progress (the partial unique index decides), and
        ``ValueError`` when the run id exists already.
        """
        params = _record_params(record)
        try:
            if self._pg:
                with self._statement() as conn:
                    conn.execute(_PG_INSERT_RUN, {**params, **_outbox_arrays(outbox)})
            else:
                with self._write() as conn:
                    conn.execute(_SQ_INSERT_RECORD, params)
                    conn.execute(_SQ_INSERT_HISTORY, _history_params(record))
                    if outbox:
                        conn.execute(_SQ_UPSERT_OUTBOX, [_outbox_params(m) for m in _unique(outbox)])
        except IntegrityError as exc:
            constraint = _violated_constraint(exc)
            if constraint not in (IN_PROGRESS_INDEX, RECORDS_PK):
                raise
            other = self._in_progress_run(record, exclude="") if record.run_state.in_progress else None
            if constraint == IN_PROGRESS_INDEX or other is not None:
                raise WorkflowInProgress(
                    workflow=record.workflow_name, foreign_id=record.foreign_id, run_id=other
                ) from exc
            raise ValueError(f"run {record.run_id} already exists") from exc

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        *,
        reset_errors: bool = False,
    ) -> bool:
        """Compare-and-set ``record`` against ``expected_version``; see ``RecordStore.update_run``.

        Raises ``WorkflowInProgress`` when the run moves back into progress
        while another run for its foreign id is in progress.
        """
        params = _record_params(record)
        try:
            if self._pg:
                params.update(_outbox_arrays(outbox))
                params["expected_version"] = expected_version
                params["reset_errors"] = reset_errors
                with self._statement() as conn:
                    return bool(conn.execute(_PG_UPDATE_RUN, params).scalar_one())
            with self._write() as conn:
                params["b_run_id"] = record.run_id
                params["b_expected_version"] = expected_version
                if conn.execute(_SQ_UPDATE_RECORD, params).rowcount != 1:
                    conn.rollback()
                    return False
                conn.execute(_SQ_INSERT_HISTORY, _history_params(record))
                conn.execute(_SQ_DELETE_STEP_DOORBELLS, {"b_run_id": record.run_id})
                conn.execute(_SQ_DELETE_OTHER_ERRORS, {"b_run_id": record.run_id, "b_status": int(record.status)})
                if reset_errors:
                    conn.execute(_SQ_RESET_ERRORS, {"b_run_id": record.run_id})
                if outbox:
                    conn.execute(_SQ_UPSERT_OUTBOX, [_outbox_params(m) for m in _unique(outbox)])
                return True
        except IntegrityError as exc:
            if _violated_constraint(exc) != IN_PROGRESS_INDEX:
                raise
            raise WorkflowInProgress(
                workflow=record.workflow_name,
                foreign_id=record.foreign_id,
                run_id=self._in_progress_run(record, exclude=record.run_id),
            ) from exc

    def _in_progress_run(self, record: Record, *, exclude: str) -> str | None:
        # Best effort: the blocking run may finish between the failure and this read.
        with self._statement() as conn:
            return conn.execute(
                _IN_PROGRESS_OF,
                {"b_workflow": record.workflow_name, "b_foreign_id": record.foreign_id, "b_exclude": exclude},
            ).scalar_one_or_none()

    def scrub_history(self, run_id: str, obj: bytes) -> None:
        """Replace the object in every history row of the run (data deletion)."""
        params = {"b_run_id": run_id, "b_object": bytes(obj).decode("utf-8")}
        if self._pg:
            with self._statement() as conn:
                conn.execute(_SCRUB_HISTORY, params)
            return
        with self._write() as conn:
            conn.execute(_SCRUB_HISTORY, params)

    def stranded_runs(
        self, workflow_name: str, statuses: Sequence[int], updated_before: datetime, limit: int
    ) -> list[Record]:
        """Initiated or running runs at one of ``statuses``, untouched since ``updated_before``, without a
        step doorbell, oldest first."""
        if not statuses or limit <= 0:
            return []
        params = {
            "b_workflow": workflow_name,
            "b_statuses": [int(s) for s in statuses],
            "b_before": updated_before,
            "b_limit": limit,
        }
        with self._statement() as conn:
            return [_to_record(row) for row in conn.execute(_STRANDED, params)]

    def lookup(self, run_id: str) -> Record:
        """The run with ``run_id``; raises ``RecordNotFound``."""
        with self._statement() as conn:
            row = conn.execute(_LOOKUP, {"b_run_id": run_id}).first()
        if row is None:
            raise RecordNotFound(run_id=run_id)
        return _to_record(row)

    def latest(self, workflow_name: str, foreign_id: str) -> Record:
        """The newest run (by creation time, then run id) for the foreign id; raises ``RecordNotFound``."""
        with self._statement() as conn:
            row = conn.execute(_LATEST, {"b_workflow": workflow_name, "b_foreign_id": foreign_id}).first()
        if row is None:
            raise RecordNotFound(workflow=workflow_name, foreign_id=foreign_id)
        return _to_record(row)

    def list_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        """Runs matching every given filter, ordered by (created_at, run_id), one page of them."""
        query = select(records).where(*_run_filters(workflow_name, status, run_state, foreign_id, run_id_prefix))
        if order == "desc":
            query = query.order_by(records.c.created_at.desc(), records.c.run_id.desc())
        else:
            query = query.order_by(records.c.created_at.asc(), records.c.run_id.asc())
        query = query.limit(limit).offset(offset)
        with self._statement() as conn:
            return [_to_record(row) for row in conn.execute(query)]

    def count_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
    ) -> int:
        """How many runs match every given filter (all of them, whatever a page of ``list_runs`` shows)."""
        where = _run_filters(workflow_name, status, run_state, foreign_id, run_id_prefix)
        with self._statement() as conn:
            return int(conn.execute(select(func.count()).select_from(records).where(*where)).scalar_one())

    def history(self, run_id: str) -> list[HistoryEntry]:
        """Every stored version of the run, oldest first (empty for an unknown run)."""
        with self._statement() as conn:
            rows = conn.execute(_HISTORY, {"b_run_id": run_id}).all()
        return [
            HistoryEntry(
                run_id=row.run_id,
                version=row.version,
                status=row.status,
                run_state=RunState(row.run_state),
                object=row.object.encode("utf-8"),
                reason=row.reason,
                created_at=to_utc(row.created_at),
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ outbox

    def outbox(self, run_id: str | None = None, *, queue: str | None = None) -> list[OutboxMessage]:
        """Pending doorbells ordered by (created_at, id): of one run and/or one queue, or all of them."""
        with self._statement() as conn:
            if queue is not None:
                query = _OUTBOX_ALL.where(outbox.c.queue == queue)
                rows = conn.execute(query if run_id is None else query.where(outbox.c.run_id == run_id)).all()
            elif run_id is None:
                rows = conn.execute(_OUTBOX_ALL).all()
            else:
                rows = conn.execute(_OUTBOX_OF_RUN, {"b_run_id": run_id}).all()
        return [_to_message(row) for row in rows]

    def claim_due_outbox(
        self,
        now: datetime,
        *,
        limit: int,
        redeliver_after: timedelta,
        max_interval: timedelta,
    ) -> list[OutboxMessage]:
        """Claim up to ``limit`` doorbells due at ``now``, returned as they were before the claim.

        Each claimed row is pushed to ``now + min(redeliver_after * 2**attempts,
        max_interval)`` with one more attempt, so concurrent callers never
        claim the same row in the same period.
        """
        if limit <= 0:
            return []
        now = to_utc(now)
        if self._pg:
            params = {
                "now": now,
                "limit": limit,
                "redeliver_us": redeliver_after // timedelta(microseconds=1),
                "max_us": max_interval // timedelta(microseconds=1),
            }
            with self._statement() as conn:
                return [_to_message(row) for row in conn.execute(_PG_CLAIM_DUE, params)]
        with self._write() as conn:
            claimed = [_to_message(row) for row in conn.execute(_SQ_CLAIM_DUE_SELECT, {"b_now": now, "b_limit": limit})]
            if claimed:
                conn.execute(
                    _SQ_CLAIM_DUE_BUMP,
                    [
                        {
                            "b_id": m.id,
                            "b_due_at": now + _backoff(redeliver_after, max_interval, m.attempts),
                            "b_attempts": m.attempts + 1,
                        }
                        for m in claimed
                    ],
                )
        return claimed

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Insert the doorbells whose id is not present yet; existing rows are left as they are."""
        if not messages:
            return
        if self._pg:
            with self._statement() as conn:
                conn.execute(_PG_INSERT_OUTBOX, _outbox_arrays(messages, keep="first"))
            return
        with self._write() as conn:
            conn.execute(_SQ_INSERT_OUTBOX, [_outbox_params(m) for m in _unique(messages, keep="first")])

    def delete_outbox(self, message_ids: Sequence[str]) -> None:
        """Delete the doorbells with these ids; unknown ids are ignored."""
        if not message_ids:
            return
        if self._pg:
            with self._statement() as conn:
                conn.execute(_PG_DELETE_OUTBOX, {"ids": list(message_ids)})
            return
        with self._write() as conn:
            conn.execute(_SQ_DELETE_OUTBOX, {"b_ids": list(message_ids)})

    # ------------------------------------------------------------------ claims

    def claim(
        self,
        message_id: str,
        run_id: str,
        version: int | None,
        token: str,
        now: datetime,
        until: datetime,
        *,
        attempt: int | None = None,
    ) -> Claim:
        """Read the run and take the doorbell for ``token``; see ``RecordStore.claim``. One round trip on PostgreSQL."""
        now, until = to_utc(now), to_utc(until)
        if self._pg:
            params = {
                "id": message_id,
                "run_id": run_id,
                "version": version,
                "attempt": attempt,
                "token": token,
                "now": now,
                "until": until,
            }
            with self._claim_statement() as conn:
                row = conn.execute(_PG_CLAIM, params).one()
            return claim_from_row(row._mapping, until)
        with self._write() as conn:
            found = conn.execute(_LOOKUP, {"b_run_id": run_id}).first()
            record = _to_record(found) if found is not None else None
            outbox_row = conn.execute(_SQ_OUTBOX_ROW, {"b_id": message_id}).first()
            doorbell = _to_message(outbox_row) if outbox_row is not None else None
            if doorbell is not None and doorbell.kind == "hook":
                failures = conn.execute(_SQ_HOOK_FAILURES, {"b_id": message_id}).scalar()
            elif record is not None:
                failures = conn.execute(_SQ_STEP_FAILURES, {"b_run_id": run_id, "b_status": record.status}).scalar()
            else:
                failures = 0
            current = version is None or (record is not None and record.meta.version == version)
            held = doorbell is not None and doorbell.claimed_until is not None and doorbell.claimed_until > now
            expected = doorbell is not None and (attempt is None or attempt == doorbell.retries + 1)
            if doorbell is None or not current or held or not expected:
                return Claim(record=record, doorbell=doorbell, claimed=False, abandoned=False, failures=failures or 0)
            assert outbox_row is not None
            conn.execute(_SQ_TAKE_CLAIM, {"b_id": message_id, "b_token": token, "b_until": until})
            return Claim(
                record=record,
                doorbell=replace(doorbell, claimed_until=until),
                claimed=True,
                abandoned=outbox_row.claimed_by is not None,
                failures=failures or 0,
            )

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        """Extend the claims on these doorbells, and the step slots held under their ids, to ``until``."""
        if not message_ids:
            return
        if self._pg:
            with self._claim_statement() as conn:
                conn.execute(_PG_RENEW_CLAIMS, {"ids": list(message_ids), "until": to_utc(until)})
            return
        with self._write() as conn:
            params = {"b_ids": list(message_ids), "b_until": until}
            conn.execute(_SQ_RENEW_CLAIMS, params)
            conn.execute(_SQ_RENEW_SLOTS, params)

    def release_claim(self, message_id: str, token: str, *, due_at: datetime | None = None) -> bool:
        """Let go of the claim ``token`` holds on the doorbell (ringing it again at ``due_at`` if given)."""
        params = {"b_id": message_id, "b_token": token, "b_due_at": due_at}
        with self._claim_statement() if self._pg else self._write() as conn:
            return bool(conn.execute(_RELEASE_CLAIM, params).rowcount)

    def abandon_claim(self, message_id: str, now: datetime) -> None:
        """Expire the claim on a doorbell whose holder died, and make it due at ``now``."""
        with self._claim_statement() if self._pg else self._write() as conn:
            conn.execute(_ABANDON_CLAIM, {"b_id": message_id, "b_now": now})

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        """Swap the doorbell ``token`` holds for ``messages`` in one transaction; False if it is not held."""
        if self._pg:
            params: dict[str, Any] = {"id": message_id, "token": token, **_outbox_arrays(messages)}
            with self._statement() as conn:
                return bool(conn.execute(_PG_REPLACE_DOORBELL, params).scalar_one())
        with self._write() as conn:
            if conn.execute(_SQ_DELETE_HELD, {"b_id": message_id, "b_token": token}).rowcount != 1:
                return False
            if messages:
                conn.execute(_SQ_UPSERT_OUTBOX, [_outbox_params(m) for m in _unique(messages)])
            return True

    # ------------------------------------------------------------------ slots

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Take one of ``limit`` slots of a step (``parallel_count``); False when all are held."""
        if self._pg:
            params = {
                "workflow_name": workflow_name,
                "status": status,
                "limit": limit,
                "holder": holder,
                "now": now,
                "expires_at": expires_at,
            }
            with self._statement() as conn:
                return conn.execute(_PG_ACQUIRE_SLOT, params).first() is not None
        with self._write() as conn:
            taken = set(
                conn.execute(_SLOTS_TAKEN, {"b_workflow_name": workflow_name, "b_status": status, "b_now": now})
                .scalars()
                .all()
            )
            free = next((slot for slot in range(limit) if slot not in taken), None)
            if free is None:
                return False
            conn.execute(
                _SQ_TAKE_SLOT,
                {
                    "workflow_name": workflow_name,
                    "status": status,
                    "slot": free,
                    "holder": holder,
                    "expires_at": expires_at,
                },
            )
            return True

    def release_slot(self, holder: str) -> None:
        """Free ``holder``'s slot."""
        self._write_one(_RELEASE_SLOT, {"b_holder": holder})

    # ------------------------------------------------------------------ errors

    def record_failure(
        self,
        message_id: str,
        token: str,
        run_id: str,
        status: int,
        error: ErrorInfo,
        *,
        due_at: datetime | None,
        retries: int,
    ) -> int | None:
        """Count a failed attempt while ``token`` holds the doorbell; see ``RecordStore.record_failure``."""
        params: dict[str, Any] = {"run_id": run_id, "status": int(status), **_error_params(error)}
        return self._count_failure(_PG_RECORD_FAILURE, _SQ_RECORD_ERROR, params, message_id, token, due_at, retries)

    def _count_failure(
        self,
        pg_statement: Executable,
        sqlite_statement: Executable,
        params: dict[str, Any],
        message_id: str,
        token: str,
        due_at: datetime | None,
        retries: int,
    ) -> int | None:
        """Release ``token``'s claim and count a failure in one transaction; None when the claim is not held."""
        if self._pg:
            due = None if due_at is None else to_utc(due_at)
            params = {**params, "id": message_id, "token": token, "retries": retries, "due_at": due}
            with self._statement() as conn:
                count = conn.execute(pg_statement, params).scalar_one_or_none()
            return None if count is None else int(count)
        with self._write() as conn:
            released = conn.execute(
                _SQ_RELEASE_FAILED, {"b_id": message_id, "b_token": token, "b_retries": retries, "b_due_at": due_at}
            ).first()
            if released is None:
                return None
            params = {"message_id": message_id, "run_id": released.run_id, **params}
            return int(conn.execute(sqlite_statement, params).scalar_one())

    def record_error(self, run_id: str, status: int, error: ErrorInfo) -> int:
        """Count a failed attempt at ``status`` that had no doorbell; return the new count."""
        params: dict[str, Any] = {"run_id": run_id, "status": int(status), **_error_params(error)}
        if self._pg:
            with self._statement() as conn:
                return int(conn.execute(_PG_RECORD_ERROR, params).scalar_one())
        with self._write() as conn:
            return int(conn.execute(_SQ_RECORD_ERROR, params).scalar_one())

    def errors(self, run_id: str) -> list[StepErrors]:
        """The run's error counters, by status."""
        with self._statement() as conn:
            rows = conn.execute(_ERRORS, {"b_run_id": run_id}).all()
        return [
            StepErrors(
                run_id=row.run_id,
                status=row.status,
                count=row._mapping["count"],  # ``Row.count`` is the tuple method
                last_error=_error_info(row),
            )
            for row in rows
        ]

    def record_hook_failure(
        self, message_id: str, token: str, hook: str, error: ErrorInfo, *, due_at: datetime, retries: int
    ) -> int | None:
        """Count a failed hook execution while ``token`` holds its doorbell, and ring it again at ``due_at``."""
        params: dict[str, Any] = {"hook": storable_text(hook, limit=MAX_NAME_LENGTH), **_error_params(error)}
        return self._count_failure(
            _PG_RECORD_HOOK_FAILURE, _SQ_RECORD_HOOK_ERROR, params, message_id, token, due_at, retries
        )

    def hook_errors(self, run_id: str) -> list[HookErrors]:
        """Failure counters of the run's hook executions, by message id."""
        with self._statement() as conn:
            rows = conn.execute(_HOOK_ERRORS, {"b_run_id": run_id}).all()
        return [
            HookErrors(
                message_id=row.message_id,
                run_id=row.run_id,
                hook=row.hook,
                count=row._mapping["count"],
                last_error=_error_info(row),
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ dead letters

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a message no task could be given (a letter whose id is stored already is ignored)."""
        statement = dead_letter_sql.PG_INSERT if self._pg else dead_letter_sql.SQLITE_INSERT
        self._write_one(statement, dead_letter_sql.params(letter))

    def dead_letters(
        self, *, queue: str | None = None, id_prefix: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[DeadLetter]:
        """Dead letters matching every given filter, newest first, one page of them."""
        with self._statement() as conn:
            rows = conn.execute(dead_letter_sql.page(queue, id_prefix, limit, offset)).all()
        return [dead_letter_sql.from_row(row._mapping) for row in rows]

    def count_dead_letters(self, *, queue: str | None = None, id_prefix: str | None = None) -> int:
        """How many dead letters match every given filter."""
        with self._statement() as conn:
            return int(conn.execute(dead_letter_sql.count(queue, id_prefix)).scalar_one())

    def discard_dead_letters(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; return how many of them there were."""
        if not ids:
            return 0
        with self._statement() if self._pg else self._write() as conn:
            return int(conn.execute(dead_letter_sql.DISCARD, {"b_ids": sorted(set(ids))}).rowcount)


def _error_params(error: ErrorInfo) -> dict[str, Any]:
    """The columns a new error counter row gets from one failure."""
    return {
        "count": 1,
        "error_type": error.error_type,
        "message": error.message,
        "traceback": error.traceback,
        "occurred_at": to_utc(error.occurred_at),
    }


def _error_info(row: Row[Any]) -> ErrorInfo:
    return ErrorInfo(
        error_type=row.error_type,
        message=row.message,
        traceback=row.traceback,
        occurred_at=to_utc(row.occurred_at),
    )
