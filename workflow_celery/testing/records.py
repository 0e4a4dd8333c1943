"""Runs and records made in one line, to unit-test a step, callback, timeout or hook alone.

The equivalent of the original's ``NewTestingRun``: no store, no broker, no
workflow, just the value a worker would hand to the function::

    run = make_run(Order(id="order-6", items=["pen"]), OrderStatus.VALIDATED)
    assert pay(run) == OrderStatus.PAID

    record = make_record(order, OrderStatus.PAID, run_state=RunState.COMPLETED)
    send_confirmation(record)

The special returns of a ``Run`` (``run.skip()``, ``run.pause(reason)``, …)
are values the engine acts on, so a test compares them with ``==`` to the
same call: ``assert step(run) == run.skip()``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..core.errors import ConfigurationError
from ..core.record import Meta, TypedRecord
from ..core.run import Run
from ..core.run_state import RunState

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)
R = TypeVar("R", bound=TypedRecord[Any, Any])

DEFAULT_FOREIGN_ID = "foreign-id-1"
DEFAULT_RUN_ID = "run-1"
DEFAULT_WORKFLOW_NAME = "test-workflow"


def make_run(
    obj: T,
    status: S,
    *,
    run_state: RunState = RunState.RUNNING,
    foreign_id: str = DEFAULT_FOREIGN_ID,
    run_id: str = DEFAULT_RUN_ID,
    workflow_name: str = DEFAULT_WORKFLOW_NAME,
    version: int = 1,
    reason: str = "",
    at: datetime | None = None,
) -> Run[T, S]:
    """A ``Run`` at ``status`` holding ``obj``, as a step, callback or timeout function receives it.

    ``at`` (an aware datetime, default now in UTC) is both ``created_at`` and
    ``updated_at``; ``reason`` becomes ``meta.run_state_reason``. Raises
    ``ConfigurationError`` for a naive ``at``, a version below 1 or a status
    that is not an ``IntEnum`` member.
    """
    made: Run[T, S] = _made(Run, obj, status, run_state, foreign_id, run_id, workflow_name, version, reason, at)
    return made


def make_record(
    obj: T,
    status: S,
    *,
    run_state: RunState = RunState.RUNNING,
    foreign_id: str = DEFAULT_FOREIGN_ID,
    run_id: str = DEFAULT_RUN_ID,
    workflow_name: str = DEFAULT_WORKFLOW_NAME,
    version: int = 1,
    reason: str = "",
    at: datetime | None = None,
) -> TypedRecord[T, S]:
    """A ``TypedRecord`` as a hook receives it; the arguments and errors are those of :func:`make_run`."""
    made: TypedRecord[T, S] = _made(
        TypedRecord, obj, status, run_state, foreign_id, run_id, workflow_name, version, reason, at
    )
    return made


def _made(
    cls: type[R],
    obj: object,
    status: enum.IntEnum,
    run_state: RunState,
    foreign_id: str,
    run_id: str,
    workflow_name: str,
    version: int,
    reason: str,
    at: datetime | None,
) -> R:
    if not isinstance(status, enum.IntEnum):
        raise ConfigurationError(f"status must be a member of the workflow's IntEnum, got {status!r}")
    if at is None:
        at = datetime.now(UTC)
    elif at.tzinfo is None or at.utcoffset() is None:
        raise ConfigurationError(f"at must be an aware datetime, got the naive {at!r}")
    if version < 1:
        raise ConfigurationError(f"version counts writes from 1, got {version}")
    return cls(
        workflow_name=workflow_name,
        foreign_id=foreign_id,
        run_id=run_id,
        run_state=RunState(run_state),
        status=status,
        object=obj,
        created_at=at,
        updated_at=at,
        meta=Meta(version=version, run_state_reason=reason, status_description=status.name),
    )
