"""Where the order workflow's hooks send things: a table standing in for email, inventory and tickets.

Hooks run at least once, so each write is keyed by the run id and the kind of
message: a second delivery of the same hook finds the row and does nothing.
This is the idempotency pattern every hook should follow.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

metadata = sa.MetaData()
sent = sa.Table(
    "example_order_notifications",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("foreign_id", sa.String(255), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
)


class Notifications:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)
        # Celery's prefork pool forks after this module was imported: a child must never use a connection
        # of its parent's pool (two processes on one socket lose or mix their statements). SQLAlchemy's
        # advice: in the child, forget the pool without closing the parent's connections.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))

    def send_once(self, run_id: str, kind: str, foreign_id: str, detail: str) -> bool:
        """Record a message unless this run already sent one of this kind; True if it was new."""
        values = {
            "run_id": run_id,
            "kind": kind,
            "foreign_id": foreign_id,
            "detail": detail,
            "sent_at": datetime.now(UTC),
        }
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(sent).values(**values).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def dispose(self) -> None:
        self.engine.dispose()

    def all(self) -> list[dict[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sent.c.run_id, sent.c.kind, sent.c.foreign_id, sent.c.detail)).all()
        return [dict(r._mapping) for r in rows]
