"""One error root for the whole library.

Each class's docstring is its default message; context travels as keyword
attributes (workflow, foreign id, run id, statuses) and is appended to the
message so a log line alone tells an operator which run is affected.
"""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """workflow error"""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.context = {k: v for k, v in context.items() if v is not None}
        for key, value in self.context.items():
            setattr(self, key, value)
        # The docstring's first paragraph, wrapped lines joined.
        base = message or " ".join((type(self).__doc__ or "").strip().split("\n\n")[0].split())
        if self.context:
            details = ", ".join(f"{k}={v!s}" for k, v in self.context.items())
            base = f"{base} ({details})"
        super().__init__(base)


class ConfigurationError(WorkflowError):
    """the workflow is misconfigured"""


class WorkflowInProgress(WorkflowError):
    """a run for this foreign id is still in progress - retry once it has finished"""


class RecordNotFound(WorkflowError):
    """record not found"""


class InvalidTransition(WorkflowError):
    """invalid transition"""


class InvalidRunStateTransition(WorkflowError):
    """invalid run state transition"""


class AwaitTimeout(WorkflowError, TimeoutError):
    """timed out waiting for the run to reach the status"""


class SerializationError(WorkflowError):
    """the object cannot be stored as JSON"""


class AttemptAbandoned(WorkflowError):
    """the attempt ended without recording its outcome: the process running it died (killed, out of memory, a hard
    time limit) or lost the database"""


class SchemaMissing(WorkflowError):
    """the database has no workflow-celery schema, or an older one: run `workflow-celery db upgrade`"""


class DatabaseConnectionLost(WorkflowError):
    """the connection to the database was lost while a statement ran: it may or may not have been committed"""
