"""workflow-celery: durable, typed, event-driven state-machine workflows executed by Celery workers.

The database is the truth and Celery is the doorbell: every transition is a
compare-and-set on the run's version, committed with the messages that ring
the next steps; duplicate, late or lost messages cannot corrupt a run.
"""

from __future__ import annotations

from .adapters.inprocess import InProcessBroker
from .adapters.memory import MemoryStore
from .adapters.sql import SQLStore
from .builder import Builder, StepHandle, duration_timer, time_timer
from .core.answer import Outcome
from .core.awaiting import RunFinished
from .core.errors import (
    AwaitTimeout,
    ConfigurationError,
    DatabaseConnectionLost,
    InvalidRunStateTransition,
    InvalidTransition,
    RecordNotFound,
    SchemaMissing,
    SerializationError,
    WorkflowError,
    WorkflowInProgress,
)
from .core.record import HistoryEntry, Meta, Record, TypedRecord
from .core.run import Run
from .core.run_state import RunState
from .core.workflow import Workflow

__all__ = [
    "AwaitTimeout",
    "Builder",
    "ConfigurationError",
    "DatabaseConnectionLost",
    "HistoryEntry",
    "InProcessBroker",
    "InvalidRunStateTransition",
    "InvalidTransition",
    "MemoryStore",
    "Meta",
    "Outcome",
    "Record",
    "RecordNotFound",
    "Run",
    "RunFinished",
    "RunState",
    "SQLStore",
    "SchemaMissing",
    "SerializationError",
    "StepHandle",
    "TypedRecord",
    "Workflow",
    "WorkflowError",
    "WorkflowInProgress",
    "duration_timer",
    "time_timer",
]

__version__ = "0.1.0"
