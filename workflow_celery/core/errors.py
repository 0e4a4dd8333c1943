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
        base = message or (type(self).__doc__ or "").strip().splitlines()[0]
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


class SchemaMissing(WorkflowError):
    """the database has no workflow-celery schema, or an older one: run `workflow-celery db upgrade`"""
