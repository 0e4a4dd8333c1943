"""Doorbells: the messages a worker answers, and how they are built and checked.

A body carries identifiers only: ``{"workflow", "run_id", "status", "version"}``
plus an optional ``"action"`` (``"step"`` by default, ``"resume"``, ``"delete"``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import WorkflowError
from .ports import OutboxMessage
from .record import Record


class Action(enum.Enum):
    STEP = "step"
    RESUME = "resume"
    DELETE = "delete"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Message:
    workflow: str
    run_id: str
    status: int
    version: int
    action: Action
    timeout: int = 0


def parse_message(workflow: str, body: Any, *, expected_status: int | None) -> Message:
    """Validate a body; raise ``WorkflowError`` naming what is wrong with it."""
    if not isinstance(body, Mapping):
        raise WorkflowError(f"malformed message: expected an object, got {type(body).__name__}", workflow=workflow)
    run_id = body.get("run_id")
    msg_workflow = body.get("workflow")
    status = body.get("status")
    version = body.get("version")
    if msg_workflow != workflow:
        raise WorkflowError(f"foreign message: it names workflow {msg_workflow!r}", workflow=workflow, run_id=run_id)
    if not isinstance(run_id, str) or not run_id:
        raise WorkflowError("malformed message: run_id missing", workflow=workflow)
    if type(status) is not int or (expected_status is not None and status != expected_status):
        raise WorkflowError(
            f"malformed message: status {status!r} does not match the queue's status {expected_status}",
            workflow=workflow,
            run_id=run_id,
        )
    if type(version) is not int or version < 1:
        raise WorkflowError(f"malformed message: bad version {version!r}", workflow=workflow, run_id=run_id)
    try:
        action = Action(body.get("action", "step"))
    except ValueError:
        raise WorkflowError(f"malformed message: unknown action {body.get('action')!r}", workflow=workflow) from None
    timeout = body.get("timeout", 0)
    if type(timeout) is not int or timeout < 0:
        raise WorkflowError(f"malformed message: bad timeout index {timeout!r}", workflow=workflow, run_id=run_id)
    return Message(workflow=workflow, run_id=run_id, status=status, version=version, action=action, timeout=timeout)


def doorbell(
    record: Record,
    queue: str,
    now: datetime,
    *,
    action: Action,
    due_at: datetime,
    timeout: int | None = None,
) -> OutboxMessage:
    """A message bound to one version of a run; any later write of the run supersedes it."""
    suffix = "" if action is Action.STEP else f".{action.value}"
    if timeout is not None:
        suffix += f".{timeout}"
    body: dict[str, Any] = {
        "workflow": record.workflow_name,
        "run_id": record.run_id,
        "status": record.status,
        "version": record.meta.version,
    }
    if action is not Action.STEP:
        body["action"] = action.value
    if timeout is not None:
        body["timeout"] = timeout
    return OutboxMessage(
        id=f"{record.run_id}.{record.meta.version}{suffix}",
        workflow_name=record.workflow_name,
        run_id=record.run_id,
        kind="step",
        queue=queue,
        task=queue,
        body=body,
        created_at=now,
        due_at=due_at,
    )


@dataclass(frozen=True, slots=True)
class Doorbells:
    """What a write rings: ``now`` is published right after commit, ``later`` by the relay when due."""

    now: list[OutboxMessage]
    later: list[OutboxMessage]

    @property
    def all(self) -> list[OutboxMessage]:
        return self.now + self.later


def redeliver_at(now: datetime, redeliver_after: timedelta) -> datetime:
    return now + redeliver_after
