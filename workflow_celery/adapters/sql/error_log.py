"""``ErrorLog`` of ``SQLStore``: failed attempts counted, with their last error."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...core.ports import ErrorInfo, HookErrors, StepErrors
from ...core.text import MAX_NAME_LENGTH, storable_text
from . import queries
from .connections import Connections
from .rows import error_info, error_params

if TYPE_CHECKING:
    from .writes import DialectWrites


class SQLErrorLog:
    """The ``ErrorLog`` role of ``SQLStore`` (which provides ``_c`` and ``_writes``)."""

    _c: Connections
    _writes: DialectWrites

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
        """Count a failed attempt while ``token`` holds the doorbell; see ``ErrorLog.record_failure``.

        Releases the claim and counts the failure in one transaction; None when the claim is not held.
        """
        params: dict[str, Any] = {"run_id": run_id, "status": int(status), **error_params(error)}
        return self._writes.count_failure(False, params, message_id, token, due_at, retries)

    def record_error(self, run_id: str, status: int, error: ErrorInfo) -> int:
        """Count a failed attempt at ``status`` that had no doorbell; return the new count."""
        return self._writes.record_error({"run_id": run_id, "status": int(status), **error_params(error)})

    def errors(self, run_id: str) -> list[StepErrors]:
        """The run's error counters, by status."""
        with self._c.statement() as conn:
            rows = conn.execute(queries.ERRORS, {"b_run_id": run_id}).all()
        return [
            StepErrors(
                run_id=row.run_id,
                status=row.status,
                count=row._mapping["count"],  # ``Row.count`` is the tuple method
                last_error=error_info(row),
            )
            for row in rows
        ]

    def record_hook_failure(
        self, message_id: str, token: str, hook: str, error: ErrorInfo, *, due_at: datetime, retries: int
    ) -> int | None:
        """Count a failed hook execution while ``token`` holds its doorbell, and ring it again at ``due_at``."""
        params: dict[str, Any] = {"hook": storable_text(hook, limit=MAX_NAME_LENGTH), **error_params(error)}
        return self._writes.count_failure(True, params, message_id, token, due_at, retries)

    def hook_errors(self, run_id: str) -> list[HookErrors]:
        """Failure counters of the run's hook executions, by message id."""
        with self._c.statement() as conn:
            rows = conn.execute(queries.HOOK_ERRORS, {"b_run_id": run_id}).all()
        return [
            HookErrors(
                message_id=row.message_id,
                run_id=row.run_id,
                hook=row.hook,
                count=row._mapping["count"],
                last_error=error_info(row),
            )
            for row in rows
        ]
