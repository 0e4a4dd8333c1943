"""Statements of ``SQLStore`` on dead letters, and their rows as ``DeadLetter`` values.

The body is a binary column (``bytea``, ``BLOB``), so the bytes read back are
the bytes a worker received, whatever they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Delete, Select, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from ...core.dead_letters import DeadLetter
from .connections import Connections
from .schema import dead_letters, to_utc

if TYPE_CHECKING:
    from .writes import DialectWrites

PG_INSERT: Insert = pg_insert(dead_letters).on_conflict_do_nothing(index_elements=[dead_letters.c.id])
SQLITE_INSERT: Insert = sqlite_insert(dead_letters).on_conflict_do_nothing(index_elements=[dead_letters.c.id])
DISCARD: Delete = delete(dead_letters).where(dead_letters.c.id.in_(bindparam("b_ids", expanding=True)))


def params(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "queue": letter.queue,
        "body": letter.body,
        "reason": letter.reason,
        "received_at": to_utc(letter.received_at),
        "content_type": letter.content_type,
        "content_encoding": letter.content_encoding,
        "headers": letter.headers,
        "worker": letter.worker,
    }


def _filters(queue: str | None, id_prefix: str | None) -> list[Any]:
    where: list[Any] = []
    if queue is not None:
        where.append(dead_letters.c.queue == queue)
    if id_prefix is not None:
        where.append(dead_letters.c.id.startswith(id_prefix, autoescape=True))
    return where


def page(queue: str | None, id_prefix: str | None, limit: int, offset: int) -> Select[Any]:
    """Newest first, then by id, so pages never overlap."""
    return (
        select(dead_letters)
        .where(*_filters(queue, id_prefix))
        .order_by(dead_letters.c.received_at.desc(), dead_letters.c.id.desc())
        .limit(limit)
        .offset(offset)
    )


def count(queue: str | None, id_prefix: str | None) -> Select[Any]:
    return select(func.count()).select_from(dead_letters).where(*_filters(queue, id_prefix))


def from_row(row: Mapping[Any, Any]) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        queue=row["queue"],
        body=bytes(row["body"]),
        reason=row["reason"],
        received_at=to_utc(row["received_at"]),
        content_type=row["content_type"],
        content_encoding=row["content_encoding"],
        headers=row["headers"],
        worker=row["worker"],
    )


class SQLDeadLetters:
    """The ``DeadLetterBox`` role of ``SQLStore`` (which provides ``_c`` and ``_writes``)."""

    _c: Connections
    _writes: DialectWrites

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a message no task could be given (a letter whose id is stored already is ignored)."""
        self._writes.add_dead_letter(letter)

    def dead_letters(
        self, *, queue: str | None = None, id_prefix: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[DeadLetter]:
        """Dead letters matching every given filter, newest first, one page of them."""
        with self._c.statement() as conn:
            rows = conn.execute(page(queue, id_prefix, limit, offset)).all()
        return [from_row(row._mapping) for row in rows]

    def count_dead_letters(self, *, queue: str | None = None, id_prefix: str | None = None) -> int:
        """How many dead letters match every given filter."""
        with self._c.statement() as conn:
            return int(conn.execute(count(queue, id_prefix)).scalar_one())

    def discard_dead_letters(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; return how many of them there were."""
        if not ids:
            return 0
        with self._c.single_write() as conn:
            return int(conn.execute(DISCARD, {"b_ids": sorted(set(ids))}).rowcount)
