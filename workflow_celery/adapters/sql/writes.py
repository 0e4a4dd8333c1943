"""The writes whose statements differ between PostgreSQL and SQLite, as one protocol both dialects implement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ...core.dead_letters import DeadLetter
from ...core.ports import Claim, OutboxMessage
from ...core.record import Record


class DialectWrites(Protocol):
    """The writes whose statements differ between PostgreSQL and SQLite."""

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None: ...
    def update_run(
        self,
        record: Record,
        expected_version: int,
        outbox: Sequence[OutboxMessage],
        reset_errors: bool,
        keep_running: bool,
    ) -> bool: ...
    def claim_due_outbox(
        self, now: datetime, limit: int, redeliver_after: timedelta, max_interval: timedelta
    ) -> list[OutboxMessage]: ...
    def insert_outbox(self, messages: Sequence[OutboxMessage]) -> None: ...
    def delete_outbox(self, message_ids: Sequence[str]) -> None: ...
    def claim(
        self,
        message_id: str,
        run_id: str,
        version: int | None,
        token: str,
        now: datetime,
        until: datetime,
        attempt: int | None,
    ) -> Claim: ...
    def renew_claims(self, message_ids: Sequence[str], until: datetime) -> None: ...
    def replace_doorbell(self, message_id: str, token: str, messages: Sequence[OutboxMessage]) -> bool: ...
    def acquire_slot(
        self, workflow_name: str, status: int, limit: int, holder: str, now: datetime, expires_at: datetime
    ) -> bool: ...
    def count_failure(
        self,
        hook: bool,
        params: dict[str, Any],
        message_id: str,
        token: str,
        due_at: datetime | None,
        retries: int,
    ) -> int | None: ...
    def record_error(self, params: dict[str, Any]) -> int: ...
    def add_dead_letter(self, letter: DeadLetter) -> None: ...
