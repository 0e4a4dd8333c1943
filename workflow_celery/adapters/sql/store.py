"""``SQLStore``: the record store on PostgreSQL (production) or SQLite (one host).

The reads and the statements both dialects share live here and in
``queries``; each dialect's writes live in ``postgres`` and ``sqlite``
(PostgreSQL: one statement per write; SQLite: a ``BEGIN IMMEDIATE``
transaction per write); ``connections`` says which connection a statement
runs on and what a failed one means; ``rows`` maps records to rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ...core.errors import ConfigurationError, RecordNotFound, WorkflowInProgress
from ...core.lag import Waiting
from ...core.ports import Claim, Order, OutboxMessage
from ...core.record import HistoryEntry, Record
from ...core.run_state import RunState
from . import queries
from .connections import Connections
from .dead_letters import SQLDeadLetters
from .engine import make_engine
from .error_log import SQLErrorLog
from .joined import identity, joining, location
from .postgres import PostgresWrites
from .rows import history_entry, to_message, to_record, violated_constraint
from .schedules import SQLSchedules
from .schema import IN_PROGRESS_INDEX, RECORDS_PK, outbox, records, to_utc
from .sqlite import SQLiteWrites
from .writes import DialectWrites

__all__ = ["SQLStore", "make_engine"]


class SQLStore(SQLErrorLog, SQLDeadLetters, SQLSchedules):
    """The record store on PostgreSQL (psycopg 3) or SQLite, semantically identical to ``MemoryStore``.

    It plays every role of the core's store ports (``RunStore``, ``Outbox``,
    ``Claims``, ``Slots``, ``ErrorLog``, ``DeadLetterBox``) and ``ScheduleStore``. Connections are
    opened lazily and are safe across ``fork``: a process never uses one its
    parent opened (Celery's prefork pool forks after the parent may have
    connected).
    """

    def __init__(self, url_or_engine: str | Engine, *, pool_size: int = 5, echo: bool = False) -> None:
        """Connect lazily to ``url_or_engine`` (a URL, or an engine the caller configured and owns).

        Raises ``ConfigurationError`` for a database other than PostgreSQL or SQLite.
        """
        if isinstance(url_or_engine, Engine):
            engine = url_or_engine
        else:
            engine = make_engine(url_or_engine, pool_size=pool_size, echo=echo)
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise ConfigurationError(f"unsupported database {dialect!r}: use postgresql or sqlite")
        self.engine = engine
        self._c = Connections(engine)
        self._writes: DialectWrites = PostgresWrites(self._c) if self._c.postgresql else SQLiteWrites(self._c)
        self._identity: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"SQLStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def location(self) -> tuple[Any, ...] | None:
        """Which database this store's rows live in, whatever the URL's spelling (``joined.location``)."""
        return location(self.engine, lambda: self._database_identity(False))

    # ------------------------------------------------------------------ lifecycle

    def create_schema(self) -> None:
        """Create or upgrade the tables by running the migrations to head (idempotent, concurrency-safe)."""
        # Alembic is imported when the schema is changed only: it takes a tenth of a second and logs as it loads.
        from . import migrate

        with self._c.guard():
            migrate.upgrade(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection; the store reconnects on its next call."""
        self._c.dispose()

    # ------------------------------------------------------------------ the caller's transaction

    def joined(self, session: Session) -> AbstractContextManager[None]:
        """Write in ``session``'s transaction until the block ends (PostgreSQL).

        Every call that writes (``trigger``, ``callback``, ``pause``,
        ``resume``, ``cancel``, ``delete_data``) commits with the session's
        own changes or not at all; reads see the session's uncommitted rows.
        Their messages are published after the session commits and dropped if
        it rolls back. A failed write (``WorkflowInProgress``) is rolled back to
        a SAVEPOINT, so the session's transaction stays usable. Workers never
        write in a caller's transaction.

        Raises ``ConfigurationError`` for something other than a SQLAlchemy
        ``Session``, a session bound to another database than the store's, or
        SQLite. See ``docs/runs.md`` ("In your own transaction").
        """
        return joining(self._c, session, self.engine.dialect.name, self._database_identity)

    def _database_identity(self, fresh: bool) -> tuple[Any, ...]:
        if fresh or self._identity is None:
            with self._c.statement() as conn:
                self._identity = identity(conn)
        return self._identity

    def after_commit(self, fn: Callable[[], None]) -> bool:
        """Defer ``fn`` until the caller's transaction commits; False (``fn`` not taken) outside one."""
        caller = self._c.caller_transaction()
        if caller is None:
            return False
        caller.after_commit(fn)
        return True

    def on_its_own(self) -> AbstractContextManager[None]:
        """Writes in the block commit on their own, outside the caller's transaction (``RunStore.on_its_own``).

        A row the caller's transaction has locked (the run, updated earlier in
        it) cannot be written beside it: such a write gives up after
        ``OWN_WRITE_LOCK_TIMEOUT`` with ``sqlalchemy.exc.OperationalError``
        instead of waiting for a commit that this very thread would make.
        """
        return self._c.on_its_own()

    # ------------------------------------------------------------------ runs

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        """Insert a new run with its first history row and doorbells, atomically.

        Raises ``WorkflowInProgress`` when another run of the workflow for the
        same foreign id is in progress (the partial unique index decides), and
        ``ValueError`` when the run id exists already.
        """
        try:
            self._writes.insert_run(record, outbox)
        except IntegrityError as exc:
            constraint = violated_constraint(exc)
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
        keep_running: bool = False,
    ) -> bool:
        """Compare-and-set ``record`` against ``expected_version``; see ``RunStore.update_run``.

        Raises ``WorkflowInProgress`` when the run moves back into progress
        while another run for its foreign id is in progress.
        """
        try:
            return self._writes.update_run(record, expected_version, outbox, reset_errors, keep_running)
        except IntegrityError as exc:
            if violated_constraint(exc) != IN_PROGRESS_INDEX:
                raise
            raise WorkflowInProgress(
                workflow=record.workflow_name,
                foreign_id=record.foreign_id,
                run_id=self._in_progress_run(record, exclude=record.run_id),
            ) from exc

    def _in_progress_run(self, record: Record, *, exclude: str) -> str | None:
        # Best effort: the blocking run may finish between the failure and this read.
        with self._c.statement() as conn:
            return conn.execute(
                queries.IN_PROGRESS_OF,
                {"b_workflow": record.workflow_name, "b_foreign_id": record.foreign_id, "b_exclude": exclude},
            ).scalar_one_or_none()

    def scrub_history(self, run_id: str, obj: bytes) -> None:
        """Replace the object in every history row of the run (data deletion)."""
        with self._c.single_write() as conn:
            conn.execute(queries.SCRUB_HISTORY, {"b_run_id": run_id, "b_object": bytes(obj).decode("utf-8")})

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
        with self._c.statement() as conn:
            return [to_record(row) for row in conn.execute(queries.STRANDED, params)]

    def runs_by_status(self, workflow_name: str) -> list[tuple[int, int, int]]:
        """``(status, run_state, count)`` of the workflow's runs (one indexed scan, grouped)."""
        query = (
            select(records.c.status, records.c.run_state, func.count())
            .where(records.c.workflow_name == workflow_name)
            .group_by(records.c.status, records.c.run_state)
            .order_by(records.c.status, records.c.run_state)
        )
        with self._c.statement() as conn:
            return [(int(status), int(state), int(n)) for status, state, n in conn.execute(query)]

    def waiting_runs(self, workflow_name: str, statuses: Sequence[int]) -> list[Waiting]:
        """Initiated or running runs at each of ``statuses``: how many, and the oldest ``updated_at``."""
        if not statuses:
            return []
        query = (
            select(records.c.status, func.count(), func.min(records.c.updated_at))
            .where(
                records.c.workflow_name == workflow_name,
                records.c.status.in_(list(statuses)),
                records.c.run_state.in_([int(RunState.INITIATED), int(RunState.RUNNING)]),
            )
            .group_by(records.c.status)
            .order_by(records.c.status)
        )
        with self._c.statement() as conn:
            rows = conn.execute(query).all()
        return [Waiting(status, count, to_utc(oldest)) for status, count, oldest in rows]

    def lookup(self, run_id: str) -> Record:
        """The run with ``run_id``; raises ``RecordNotFound``."""
        with self._c.statement() as conn:
            row = conn.execute(queries.LOOKUP, {"b_run_id": run_id}).first()
        if row is None:
            raise RecordNotFound(run_id=run_id)
        return to_record(row)

    def latest(self, workflow_name: str, foreign_id: str) -> Record:
        """The newest run (by creation time, then run id) for the foreign id; raises ``RecordNotFound``."""
        with self._c.statement() as conn:
            row = conn.execute(queries.LATEST, {"b_workflow": workflow_name, "b_foreign_id": foreign_id}).first()
        if row is None:
            raise RecordNotFound(workflow=workflow_name, foreign_id=foreign_id)
        return to_record(row)

    def list_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        """Runs matching every given filter, ordered by (created_at, run_id), one page of them."""
        where = queries.run_filters(
            workflow_name, status, run_state, foreign_id, run_id_prefix, created_after, created_before
        )
        query = select(records).where(*where)
        if order == "desc":
            query = query.order_by(records.c.created_at.desc(), records.c.run_id.desc())
        else:
            query = query.order_by(records.c.created_at.asc(), records.c.run_id.asc())
        with self._c.statement() as conn:
            return [to_record(row) for row in conn.execute(query.limit(limit).offset(offset))]

    def count_runs(
        self,
        workflow_name: str | None,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        run_id_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> int:
        """How many runs match every given filter (all of them, whatever a page of ``list_runs`` shows)."""
        where = queries.run_filters(
            workflow_name, status, run_state, foreign_id, run_id_prefix, created_after, created_before
        )
        with self._c.statement() as conn:
            return int(conn.execute(select(func.count()).select_from(records).where(*where)).scalar_one())

    def history(self, run_id: str) -> list[HistoryEntry]:
        """Every stored version of the run, oldest first (empty for an unknown run)."""
        with self._c.statement() as conn:
            return [history_entry(row) for row in conn.execute(queries.HISTORY, {"b_run_id": run_id})]

    # ------------------------------------------------------------------ outbox

    def outbox(self, run_id: str | None = None, *, queue: str | None = None) -> list[OutboxMessage]:
        """Pending doorbells ordered by (created_at, id): of one run and/or one queue, or all of them."""
        with self._c.statement() as conn:
            if queue is not None:
                query = queries.OUTBOX_ALL.where(outbox.c.queue == queue)
                rows = conn.execute(query if run_id is None else query.where(outbox.c.run_id == run_id)).all()
            elif run_id is None:
                rows = conn.execute(queries.OUTBOX_ALL).all()
            else:
                rows = conn.execute(queries.OUTBOX_OF_RUN, {"b_run_id": run_id}).all()
        return [to_message(row) for row in rows]

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
        return self._writes.claim_due_outbox(to_utc(now), limit, redeliver_after, max_interval)

    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Insert the doorbells whose id is not present yet; existing rows are left as they are."""
        if messages:
            self._writes.insert_outbox(messages)

    def delete_outbox(self, message_ids: Sequence[str]) -> None:
        """Delete the doorbells with these ids; unknown ids are ignored."""
        if message_ids:
            self._writes.delete_outbox(message_ids)

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
        """Read the run and take the doorbell for ``token``; see ``Claims.claim``. One round trip on PostgreSQL."""
        return self._writes.claim(message_id, run_id, version, token, to_utc(now), to_utc(until), attempt)

    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None:
        """Extend the claims on these doorbells, and the step slots held under their ids, to ``until``."""
        if message_ids:
            self._writes.renew_claims(message_ids, until)

    def release_claim(self, message_id: str, token: str, *, due_at: datetime | None = None) -> bool:
        """Let go of the claim ``token`` holds on the doorbell (ringing it again at ``due_at`` if given)."""
        params = {"b_id": message_id, "b_token": token, "b_due_at": due_at}
        with self._c.single_claim_write() as conn:
            return bool(conn.execute(queries.RELEASE_CLAIM, params).rowcount)

    def abandon_claim(self, message_id: str, now: datetime) -> None:
        """Expire the claim on a doorbell whose holder died, and make it due at ``now``."""
        with self._c.single_claim_write() as conn:
            conn.execute(queries.ABANDON_CLAIM, {"b_id": message_id, "b_now": now})

    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool:
        """Swap the doorbell ``token`` holds for ``messages`` in one transaction; False if it is not held."""
        return self._writes.replace_doorbell(message_id, token, messages)

    # ------------------------------------------------------------------ slots

    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Take one of ``limit`` slots of a step (``parallel_count``); False when all are held."""
        return self._writes.acquire_slot(workflow_name, status, limit, holder, now, expires_at)

    def release_slot(self, holder: str) -> None:
        """Free ``holder``'s slot."""
        with self._c.single_write() as conn:
            conn.execute(queries.RELEASE_SLOT, {"b_holder": holder})
