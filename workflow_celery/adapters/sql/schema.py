"""Tables of the SQL record store (SQLAlchemy Core).

The migrations in ``workflow_celery/sql/migrations`` create exactly these
tables; ``tests/contract`` checks that the two never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

from ...core.run_state import IN_PROGRESS_VALUES

VERSION_TABLE = "workflow_celery_alembic_version"
"""Alembic's bookkeeping table; its own name so it never meets a user's alembic."""

IN_PROGRESS_INDEX = "uq_workflow_records_in_progress"
"""The partial unique index that allows one in-progress run per foreign id."""

RECORDS_PK = "pk_workflow_records"

IN_PROGRESS_WHERE = "run_state IN ({})".format(", ".join(str(v) for v in IN_PROGRESS_VALUES))

RUN_ID_LENGTH = 64
OUTBOX_ID_LENGTH = 200
DEAD_LETTER_ID_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that is always UTC in Python.

    SQLite keeps no offset, so values are normalised to UTC before they are
    written (string comparison then orders them correctly) and tagged UTC when
    read; PostgreSQL returns the session's zone, which is converted too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else to_utc(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        return None if value is None else to_utc(value)


def to_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken to be UTC already (that is how SQLite hands them back)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


metadata = MetaData()

records = Table(
    "workflow_records",
    metadata,
    Column("run_id", String(RUN_ID_LENGTH), nullable=False),
    Column("workflow_name", Text, nullable=False),
    Column("foreign_id", Text, nullable=False),
    Column("run_state", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    Column("object", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_state_reason", Text, nullable=False, server_default=""),
    Column("status_description", Text, nullable=False, server_default=""),
    Column("trace_origin", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("run_id", name=RECORDS_PK),
)

Index("ix_workflow_records_foreign_id", records.c.workflow_name, records.c.foreign_id, records.c.created_at)
Index("ix_workflow_records_status", records.c.workflow_name, records.c.status)
Index("ix_workflow_records_run_state", records.c.workflow_name, records.c.run_state)
Index("ix_workflow_records_created_at", records.c.created_at)
Index(
    IN_PROGRESS_INDEX,
    records.c.workflow_name,
    records.c.foreign_id,
    unique=True,
    postgresql_where=text(IN_PROGRESS_WHERE),
    sqlite_where=text(IN_PROGRESS_WHERE),
)

history = Table(
    "workflow_history",
    metadata,
    Column("run_id", String(RUN_ID_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    Column("run_state", Integer, nullable=False),
    Column("object", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "version", name="pk_workflow_history"),
)

outbox = Table(
    "workflow_outbox",
    metadata,
    Column("id", String(OUTBOX_ID_LENGTH), nullable=False),
    Column("workflow_name", Text, nullable=False),
    Column("run_id", String(RUN_ID_LENGTH), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("queue", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("claimed_by", Text, nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("abandoned", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("id", name="pk_workflow_outbox"),
)

Index("ix_workflow_outbox_due_at", outbox.c.due_at)
Index("ix_workflow_outbox_run_id", outbox.c.run_id)

step_errors = Table(
    "workflow_step_errors",
    metadata,
    Column("run_id", String(RUN_ID_LENGTH), nullable=False),
    Column("status", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "status", name="pk_workflow_step_errors"),
)

hook_errors = Table(
    "workflow_hook_errors",
    metadata,
    Column("message_id", String(OUTBOX_ID_LENGTH), nullable=False),
    Column("run_id", String(RUN_ID_LENGTH), nullable=False),
    Column("hook", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("message_id", name="pk_workflow_hook_errors"),
)

Index("ix_workflow_hook_errors_run_id", hook_errors.c.run_id)

step_slots = Table(
    "workflow_step_slots",
    metadata,
    Column("workflow_name", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("holder", Text, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workflow_name", "status", "slot", name="pk_workflow_step_slots"),
)

Index("ix_workflow_step_slots_holder", step_slots.c.holder)

dead_letters = Table(
    "workflow_dead_letters",
    metadata,
    Column("id", String(DEAD_LETTER_ID_LENGTH), nullable=False),
    Column("queue", Text, nullable=False),
    # The bytes as the broker delivered them, whatever they are: never decoded, never re-encoded.
    Column("body", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("content_type", Text, nullable=False, server_default=""),
    Column("content_encoding", Text, nullable=False, server_default=""),
    Column("headers", Text, nullable=False, server_default=""),
    Column("worker", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("id", name="pk_workflow_dead_letters"),
)

Index("ix_workflow_dead_letters_received_at", dead_letters.c.received_at)

schedules = Table(
    "workflow_schedules",
    metadata,
    Column("workflow_name", Text, nullable=False),
    Column("foreign_id", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("catch_up", String(16), nullable=False),
    Column("initial_value", Text, nullable=True),
    Column("filter", Text, nullable=False, server_default=""),
    Column("next_slot", UTCDateTime, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("leased_until", UTCDateTime, nullable=True),
    Column("last_slot", UTCDateTime, nullable=True),
    Column("last_outcome", String(16), nullable=False, server_default=""),
    Column("last_run_id", String(RUN_ID_LENGTH), nullable=False, server_default=""),
    PrimaryKeyConstraint("workflow_name", "foreign_id", name="pk_workflow_schedules"),
)

Index("ix_workflow_schedules_next_slot", schedules.c.workflow_name, schedules.c.next_slot)

schedule_slots = Table(
    "workflow_schedule_slots",
    metadata,
    Column("workflow_name", Text, nullable=False),
    Column("foreign_id", Text, nullable=False),
    Column("slot_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("run_id", String(RUN_ID_LENGTH), nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    Column("recorded_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workflow_name", "foreign_id", "slot_at", name="pk_workflow_schedule_slots"),
)

ALL_TABLES = (records, history, outbox, step_errors, hook_errors, step_slots, dead_letters, schedules, schedule_slots)
