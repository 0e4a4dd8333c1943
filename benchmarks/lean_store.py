"""Experiment: a transition's two PostgreSQL statements sent through psycopg directly.

Every transition costs ``SQLStore.claim`` (read the run, claim its doorbell)
and ``SQLStore.update_run``: one round trip each, already prepared by
psycopg. Around each round trip, SQLAlchemy's execution layer (execution
context, parameter and result processing, ``Row`` objects) costs about as
much CPU as psycopg itself.

``install(store)`` replaces the two methods *on one store instance* by
versions that check out the same pooled connection, send the very same SQL
text and parameters on its psycopg cursor, and build the ``Claim`` with the
store's own ``claim_from_row``. Any database error falls back to the original
method, which has the full error handling (the failed statement wrote nothing:
each one is a single autocommitted statement). The workflow workers use it
when ``BENCH_LEAN_STORE=1``; ``python -m benchmarks.profile_worker --lean-store``
measures the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Connection

from workflow_celery import SQLStore
from workflow_celery.adapters.sql import postgres, rows
from workflow_celery.adapters.sql.schema import to_utc
from workflow_celery.core.ports import Claim, OutboxMessage
from workflow_celery.core.record import Record


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a checked-out SQLAlchemy connection (autocommit, as the store set it)."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def install(store: SQLStore) -> None:
    """Swap ``claim`` and ``update_run`` of ``store`` (PostgreSQL only) for the lean versions."""
    if store.engine.dialect.name != "postgresql":
        return
    dialect = store.engine.dialect
    # SQLAlchemy renders its own statements for psycopg ("%(name)s" placeholders), so the
    # server sees exactly the statements it sees through the store.
    claim_sql = str(postgres.CLAIM.compile(dialect=dialect))
    update_sql = str(postgres.UPDATE_RUN.compile(dialect=dialect))
    original_claim = store.claim
    original_update_run = store.update_run

    def claim(
        message_id: str,
        run_id: str,
        version: int | None,
        token: str,
        now: datetime,
        until: datetime,
        *,
        attempt: int | None = None,
    ) -> Claim:
        params = {
            "id": message_id,
            "run_id": run_id,
            "version": version,
            "attempt": attempt,
            "token": token,
            "now": to_utc(now),
            "until": to_utc(until),
        }
        try:
            with store._c.statement() as conn:
                row = _driver(conn).cursor(row_factory=dict_row).execute(claim_sql, params).fetchone()
        except psycopg.Error:
            return original_claim(message_id, run_id, version, token, now, until, attempt=attempt)
        assert row is not None
        return rows.claim_from_row(row, to_utc(until))

    def update_run(
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        *,
        reset_errors: bool = False,
        keep_running: bool = False,
    ) -> bool:
        params: dict[str, Any] = rows.record_params(record)
        params.update(rows.outbox_arrays(outbox))
        params["expected_version"] = expected_version
        params["reset_errors"] = reset_errors
        params["keep_running"] = keep_running
        try:
            with store._c.statement() as conn:
                row = _driver(conn).execute(update_sql, params).fetchone()
        except psycopg.Error:
            return original_update_run(
                record, expected_version, outbox, reset_errors=reset_errors, keep_running=keep_running
            )
        return bool(row and row[0])

    store.claim = claim  # type: ignore[method-assign]
    store.update_run = update_run  # type: ignore[method-assign]
