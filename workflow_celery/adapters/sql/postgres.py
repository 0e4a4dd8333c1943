"""PostgreSQL: each store write is one statement, atomic and one round trip.

The multi-table writes are data-modifying CTEs that take their doorbells as one
JSON array (``json_to_recordset``), so their SQL text never changes whatever
the number of doorbells, and psycopg prepares each once per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text

from ...core.dead_letters import DeadLetter
from ...core.failures import backoff
from ...core.ports import Claim, OutboxMessage
from ...core.record import Record
from . import dead_letters as dead_letter_sql
from .connections import Connections
from .rows import claim_from_row, outbox_json, record_params, to_message
from .schema import to_utc

OUTBOX_COLUMNS = "id, workflow_name, run_id, kind, queue, task, body, created_at, due_at, attempts, retries"

# One row per doorbell, from one JSON parameter (rows.outbox_json): a fixed statement whatever their
# number. One JSON text costs the client a tenth of what eleven parallel arrays cost psycopg to adapt.
OUTBOX_ROWS = """json_to_recordset(CAST(:o_rows AS json)) AS m(
        id text, workflow_name text, run_id text, kind text, queue text, task text, body text,
        created_at timestamptz, due_at timestamptz, attempts integer, retries integer
    )"""

# Whether an outbox row is one of the statement's doorbells.
NOT_NEW = "NOT EXISTS (SELECT 1 FROM json_to_recordset(CAST(:o_rows AS json)) AS n(id text) WHERE n.id = x.id)"

OUTBOX_ON_CONFLICT = """ON CONFLICT (id) DO UPDATE SET
        workflow_name = EXCLUDED.workflow_name, run_id = EXCLUDED.run_id, kind = EXCLUDED.kind,
        queue = EXCLUDED.queue, task = EXCLUDED.task, body = EXCLUDED.body,
        created_at = EXCLUDED.created_at, due_at = EXCLUDED.due_at, attempts = EXCLUDED.attempts,
        retries = EXCLUDED.retries, claimed_by = NULL, claimed_until = NULL"""

INSERT_RUN = text(f"""
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
    INSERT INTO workflow_outbox ({OUTBOX_COLUMNS})
    SELECT m.* FROM r CROSS JOIN {OUTBOX_ROWS}
    {OUTBOX_ON_CONFLICT}
)
SELECT count(*) AS n FROM r
""")


# Every sub-statement joins ``u``, so a lost compare-and-set writes nothing. All
# of them see the snapshot taken before the statement, and the order in which
# they run is unspecified, so no two may touch the same row: the DELETE of
# superseded step doorbells skips the new ids and the ones ``k`` keeps (``o`` replaces those by upsert,
# as a delete followed by an insert would), and the counter reset ``z`` only
# touches the status that ``d2`` keeps. ``k`` and ``z`` exist only in the
# variants that need them: a transition (neither) is the statement sent most,
# and every sub-statement costs the server CPU even when it touches nothing.
def _update_run(keep_running: bool, reset_errors: bool) -> TextClause:
    still_running = "x.claimed_until IS NOT NULL AND x.claimed_until > CAST(:updated_at AS timestamptz)"
    keep = f"""
    AND NOT ({still_running})
), k AS (
    UPDATE workflow_outbox AS x SET kind = 'superseded' FROM u
    WHERE x.run_id = u.run_id AND x.kind = 'step' AND {NOT_NEW} AND {still_running}"""
    reset = """
), z AS (
    UPDATE workflow_step_errors AS e SET count = 0 FROM u
    WHERE e.run_id = u.run_id AND e.status = u.status"""
    return text(f"""
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
    WHERE x.run_id = u.run_id AND x.kind = 'step' AND {NOT_NEW}{keep if keep_running else ""}
), d2 AS (
    DELETE FROM workflow_step_errors AS e USING u
    WHERE e.run_id = u.run_id AND e.status <> u.status{reset if reset_errors else ""}
), o AS (
    INSERT INTO workflow_outbox ({OUTBOX_COLUMNS})
    SELECT m.* FROM u CROSS JOIN {OUTBOX_ROWS}
    {OUTBOX_ON_CONFLICT}
)
SELECT count(*) AS n FROM u
""")


UPDATE_RUN = {(keep, reset): _update_run(keep, reset) for keep in (False, True) for reset in (False, True)}
"""The compare-and-set of a run, by (``keep_running``, ``reset_errors``)."""

# SKIP LOCKED hands each due row to one caller; a row another caller has just
# claimed and committed is re-checked against ``due_at <= :now`` on its new
# version (READ COMMITTED), so it is not claimed twice in one period either.
# A row whose work is running (an unexpired claim) is not rung. The delay after
# the n-th publication is the n-th of ``:delays`` (the core's backoff, computed
# by the caller up to the cap), the last one once the row has been rung more often.
CLAIM_DUE = text(f"""
WITH c AS (
    SELECT id, due_at, attempts FROM workflow_outbox
    WHERE due_at <= :now AND (claimed_until IS NULL OR claimed_until <= :now)
    ORDER BY due_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE workflow_outbox AS x SET
        due_at = :now + (CAST(:delays AS bigint[]))[LEAST(c.attempts + 1, cardinality(CAST(:delays AS bigint[])))]
                        * interval '1 microsecond',
        attempts = c.attempts + 1
    FROM c
    WHERE x.id = c.id
    RETURNING x.id, x.workflow_name, x.run_id, x.kind, x.queue, x.task, x.body, x.created_at,
              c.due_at, c.attempts, x.retries, x.claimed_until
)
SELECT {OUTBOX_COLUMNS}, claimed_until FROM u ORDER BY due_at, id
""")

INSERT_OUTBOX = text(f"""
INSERT INTO workflow_outbox ({OUTBOX_COLUMNS})
SELECT m.* FROM {OUTBOX_ROWS}
ON CONFLICT (id) DO NOTHING
""")

DELETE_OUTBOX = text("DELETE FROM workflow_outbox WHERE id = ANY(CAST(:ids AS text[]))")

# One round trip answers "may I run this doorbell's work?": the run, the row,
# the claim itself, and the failures counted so far. The UPDATE takes the
# row's lock, and a concurrent claimer waits for it and re-checks the WHERE on
# the row as the first left it, so at most one gets the claim. ``abandoned`` is
# computed from the row being replaced: a holder there whose claim expired
# never let go, so its attempt died. When nothing is claimed, the row is read
# as it was when the statement began, which is all a loser needs to know.
CLAIM = text("""
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
      AND (o.kind = 'hook' OR NOT EXISTS (
           SELECT 1 FROM workflow_outbox AS s
           WHERE s.run_id = :run_id AND s.kind = 'superseded' AND s.id <> :id AND s.claimed_until > :now))
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

RENEW_CLAIMS = text("""
WITH o AS (
    UPDATE workflow_outbox SET claimed_until = GREATEST(claimed_until, :until)
    WHERE id = ANY(CAST(:ids AS text[])) AND claimed_by IS NOT NULL
), s AS (
    UPDATE workflow_step_slots SET expires_at = GREATEST(expires_at, :until)
    WHERE holder = ANY(CAST(:ids AS text[]))
)
SELECT 1
""")

REPLACE_DOORBELL = text(f"""
WITH d AS (
    DELETE FROM workflow_outbox WHERE id = :id AND claimed_by = :token RETURNING id
), o AS (
    INSERT INTO workflow_outbox ({OUTBOX_COLUMNS})
    SELECT m.* FROM d CROSS JOIN {OUTBOX_ROWS}
    {OUTBOX_ON_CONFLICT}
)
SELECT count(*) FROM d
""")

# The count is kept only while the caller holds the doorbell: a claim that
# expired and was taken by another attempt, or a row the run's next write
# deleted, means this attempt no longer speaks for the work. A row the run's
# next write kept as ``superseded`` is deleted instead: its result was to be
# discarded, and so is its failure, or it would count against the new version.
RECORD_FAILURE = text("""
WITH o AS (
    UPDATE workflow_outbox SET claimed_by = NULL, claimed_until = NULL, retries = :retries,
        due_at = COALESCE(CAST(:due_at AS timestamptz), due_at)
    WHERE id = :id AND claimed_by = :token AND kind <> 'superseded'
    RETURNING id
), s AS (
    DELETE FROM workflow_outbox WHERE id = :id AND claimed_by = :token AND kind = 'superseded'
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

RECORD_ERROR = text("""
INSERT INTO workflow_step_errors (run_id, status, count, error_type, message, traceback, occurred_at)
VALUES (:run_id, :status, 1, :error_type, :message, :traceback, :occurred_at)
ON CONFLICT (run_id, status) DO UPDATE SET
    count = workflow_step_errors.count + 1, error_type = EXCLUDED.error_type,
    message = EXCLUDED.message, traceback = EXCLUDED.traceback, occurred_at = EXCLUDED.occurred_at
RETURNING count
""")

RECORD_HOOK_FAILURE = text("""
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

# One statement: pick a slot nobody holds (or whose lease expired) and take it. Two callers
# picking the same slot meet in ON CONFLICT; the loser's WHERE sees the fresh lease and gets
# no row back, so it counts as busy: never more than ``limit`` holders.
ACQUIRE_SLOT = text("""
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


class PostgresWrites:
    """The store's writes on PostgreSQL; see ``SQLStore`` for what each one means."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        self._c.fetch_one(INSERT_RUN, {**record_params(record), **outbox_json(outbox)})

    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        reset_errors: bool,
        keep_running: bool,
    ) -> bool:
        params = record_params(record)
        params.update(outbox_json(outbox))
        params["expected_version"] = expected_version
        row = self._c.fetch_one(UPDATE_RUN[keep_running, reset_errors], params)
        return bool(row and row["n"])

    def claim_due_outbox(
        self, now: datetime, limit: int, redeliver_after: timedelta, max_interval: timedelta
    ) -> list[OutboxMessage]:
        params = {"now": now, "limit": limit, "delays": _redelivery_delays_us(redeliver_after, max_interval)}
        with self._c.statement() as conn:
            return [to_message(row) for row in conn.execute(CLAIM_DUE, params)]

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        with self._c.statement() as conn:
            conn.execute(INSERT_OUTBOX, outbox_json(messages, keep="first"))

    def delete_outbox(self, message_ids: Sequence[str]) -> None:
        with self._c.statement() as conn:
            conn.execute(DELETE_OUTBOX, {"ids": list(message_ids)})

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
        params = {
            "id": message_id,
            "run_id": run_id,
            "version": version,
            "attempt": attempt,
            "token": token,
            "now": now,
            "until": until,
        }
        row = self._c.fetch_one(CLAIM, params, claims=True)
        assert row is not None  # the statement always returns its one row
        return claim_from_row(row, until)

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        with self._c.claim_statement() as conn:
            conn.execute(RENEW_CLAIMS, {"ids": list(message_ids), "until": to_utc(until)})

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        params: dict[str, Any] = {"id": message_id, "token": token, **outbox_json(messages)}
        with self._c.statement() as conn:
            return bool(conn.execute(REPLACE_DOORBELL, params).scalar_one())

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        params = {
            "workflow_name": workflow_name,
            "status": status,
            "limit": limit,
            "holder": holder,
            "now": now,
            "expires_at": expires_at,
        }
        with self._c.statement() as conn:
            return conn.execute(ACQUIRE_SLOT, params).first() is not None

    def count_failure(
        self,
        hook: bool,
        params: dict[str, Any],
        message_id: str,
        token: str,
        due_at: datetime | None,
        retries: int,
    ) -> int | None:
        due = None if due_at is None else to_utc(due_at)
        params = {**params, "id": message_id, "token": token, "retries": retries, "due_at": due}
        with self._c.statement() as conn:
            count = conn.execute(RECORD_HOOK_FAILURE if hook else RECORD_FAILURE, params).scalar_one_or_none()
        return None if count is None else int(count)

    def record_error(self, params: dict[str, Any]) -> int:
        with self._c.statement() as conn:
            return int(conn.execute(RECORD_ERROR, params).scalar_one())

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._c.statement() as conn:
            conn.execute(dead_letter_sql.PG_INSERT, dead_letter_sql.params(letter))


def _redelivery_delays_us(redeliver_after: timedelta, max_interval: timedelta) -> list[int]:
    """The relay's delay after a row's 1st, 2nd, ... publication, in microseconds, up to the first at the cap."""
    delays: list[int] = []
    for attempt in range(1, 64):
        delay = backoff(redeliver_after, max_interval, attempt, jitter=False)
        delays.append(delay // timedelta(microseconds=1))
        if delay >= max_interval:
            break
    return delays
