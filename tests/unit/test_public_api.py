"""The public API is pinned: a name added to or dropped from ``__all__`` is a decision, made here."""

from __future__ import annotations

import importlib

import pytest

import workflow_celery
import workflow_celery.testing

PUBLIC = {
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
}

TESTING = {
    "DEFAULT_TIMEOUT",
    "FakeClock",
    "await_timeout_insert",
    "celery_worker",
    "in_process",
    "make_record",
    "make_run",
    "require",
    "trigger_callback_on",
    "wait_for",
}

# The names the API contract fixes: renaming one breaks every user.
CONTRACT = {
    "Builder",
    "SQLStore",
    "Run",
    "RunState",
    "TypedRecord",
    "WorkflowError",
    "ConfigurationError",
    "WorkflowInProgress",
    "RecordNotFound",
    "InvalidTransition",
    "InvalidRunStateTransition",
    "AwaitTimeout",
}


def test_the_package_exports_exactly_the_public_names() -> None:
    assert set(workflow_celery.__all__) == PUBLIC
    assert len(workflow_celery.__all__) == len(PUBLIC), "a name is listed twice"


def test_the_testing_helpers_export_exactly_their_names() -> None:
    assert set(workflow_celery.testing.__all__) == TESTING


@pytest.mark.parametrize("module", ["workflow_celery", "workflow_celery.testing"])
def test_every_exported_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert missing == []


def test_the_contract_names_are_public() -> None:
    assert CONTRACT <= PUBLIC


def test_every_error_is_a_workflow_error() -> None:
    errors = [getattr(workflow_celery, name) for name in PUBLIC if name.endswith(("Error", "Timeout", "Transition"))]
    errors += [
        workflow_celery.WorkflowInProgress,
        workflow_celery.RecordNotFound,
        workflow_celery.SchemaMissing,
        workflow_celery.DatabaseConnectionLost,
    ]
    for error in errors:
        assert issubclass(error, workflow_celery.WorkflowError), error
    assert issubclass(workflow_celery.AwaitTimeout, TimeoutError)
