"""Doorbells: the messages a worker answers, what a write rings, how they are named and checked.

A body carries identifiers only: ``{"workflow", "run_id", "foreign_id",
"status", "version"}`` plus an optional ``"action"`` (``"step"`` by default,
``"timers"``, ``"timeout"``, ``"resume"``, ``"delete"``) and, for a timeout,
its index. Hook doorbells add ``"event"`` and ``"hook"``, the hook's name. A
published message also says which ``"attempt"`` it is (1 for the first): a
copy of an attempt that has already failed is dropped, so a duplicate never
skips the backoff.

One id scheme names everything: a doorbell's id is its row in the outbox and
the claim a worker takes before running its work (``{run_id}.{version}`` for
a step, with a suffix for the other actions), and each attempt at that work is
one Celery task, ``{doorbell id}-attempt-{n}``, so Flower shows every attempt
as a row of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .definition import HOOK_EVENT_BY_STATE, Definition
from .errors import WorkflowError
from .options import WorkflowOptions
from .ports import OutboxMessage
from .record import Record, TypedRecord
from .run_state import RunState

ACTIVE = (RunState.INITIATED, RunState.RUNNING)
"""Run states in which a run's step, timers and timeouts are rung."""


class Action(enum.Enum):
    STEP = "step"
    TIMERS = "timers"
    """Ask the timers of the run's status when its timeouts are due."""
    TIMEOUT = "timeout"
    RESUME = "resume"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Message:
    workflow: str
    run_id: str
    status: int
    version: int
    action: Action
    timeout: int = 0
    attempt: int | None = None
    """Which attempt this message is; None for a message that does not say (any attempt)."""

    @property
    def id(self) -> str:
        """The doorbell this message rings (its outbox row)."""
        return doorbell_id(self.run_id, self.version, self.action, self.timeout)


def doorbell_id(run_id: str, version: int, action: Action, timeout: int = 0) -> str:
    """``{run_id}.{version}`` for a step; ``.{action}`` (and ``.{index}`` for a timeout) otherwise."""
    if action is Action.STEP:
        return f"{run_id}.{version}"
    if action is Action.TIMEOUT:
        return f"{run_id}.{version}.timeout.{timeout}"
    return f"{run_id}.{version}.{action.value}"


def hook_doorbell_id(run_id: str, version: int, event: str, hook: str) -> str:
    """``{run_id}.{version}.hook.{event}.{hook name}``: one doorbell per hook of a run-state change.

    A label of the older ``{index}:{qualname}`` form (rows and messages
    written before hooks had names) gives the id those rows were written
    with, ``….hook.{event}.{index}``.
    """
    legacy = legacy_hook_label(hook)
    return f"{run_id}.{version}.hook.{event}.{hook if legacy is None else legacy[0]}"


def legacy_hook_label(hook: str) -> tuple[int, str] | None:
    """``(index, qualname)`` of a label of the older ``{index}:{qualname}`` form; None for a hook name."""
    index, colon, qualname = hook.partition(":")
    if colon and index.isascii() and index.isdigit():
        return int(index), qualname
    return None


def task_id(message_id: str, attempt: int) -> str:
    """The Celery task id of one attempt (1-based) at a doorbell's work."""
    return f"{message_id}-attempt-{attempt}"


def message_id_of(body: Any) -> str | None:
    """The doorbell a task's keyword arguments ring, or None if they are not a doorbell."""
    if not isinstance(body, Mapping):
        return None
    run_id, version = body.get("run_id"), body.get("version")
    if not isinstance(run_id, str) or type(version) is not int:
        return None
    if "hook" in body:
        hook, event = body.get("hook"), body.get("event")
        if not isinstance(event, str) or not isinstance(hook, str) or not hook:
            return None
        return hook_doorbell_id(run_id, version, event, hook)
    try:
        action = Action(body.get("action", "step"))
    except ValueError:
        return None
    timeout = body.get("timeout", 0)
    return doorbell_id(run_id, version, action, timeout if type(timeout) is int else 0)


MAX_COUNTER = 2**31 - 1
"""The largest version, attempt or timeout index a message may carry: the stores keep them as 32-bit integers."""


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
    if type(version) is not int or not 1 <= version <= MAX_COUNTER:
        raise WorkflowError(f"malformed message: bad version {version!r}", workflow=workflow, run_id=run_id)
    try:
        action = Action(body.get("action", "step"))
    except ValueError:
        raise WorkflowError(f"malformed message: unknown action {body.get('action')!r}", workflow=workflow) from None
    timeout = body.get("timeout", 0)
    if type(timeout) is not int or not 0 <= timeout <= MAX_COUNTER:
        raise WorkflowError(f"malformed message: bad timeout index {timeout!r}", workflow=workflow, run_id=run_id)
    return Message(
        workflow=workflow,
        run_id=run_id,
        status=status,
        version=version,
        action=action,
        timeout=timeout,
        attempt=attempt_of(body, workflow=workflow),
    )


def attempt_of(body: Mapping[str, Any], *, workflow: str) -> int | None:
    """The attempt a message says it is; raises ``WorkflowError`` for a value that is not a positive int."""
    attempt = body.get("attempt")
    if attempt is not None and (type(attempt) is not int or not 1 <= attempt <= MAX_COUNTER):
        raise WorkflowError(f"malformed message: bad attempt {attempt!r}", workflow=workflow)
    return attempt


def with_attempt(body: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    """The keyword arguments of the task that is attempt ``attempt`` at a doorbell."""
    return {**body, "attempt": attempt}


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
    body: dict[str, Any] = {
        "workflow": record.workflow_name,
        "run_id": record.run_id,
        "foreign_id": record.foreign_id,
        "status": record.status,
        "version": record.meta.version,
    }
    if action is not Action.STEP:
        body["action"] = action.value
    if timeout is not None:
        body["timeout"] = timeout
    return OutboxMessage(
        id=doorbell_id(record.run_id, record.meta.version, action, timeout or 0),
        workflow_name=record.workflow_name,
        run_id=record.run_id,
        kind="step",
        queue=queue,
        task=queue,
        body=body,
        created_at=now,
        due_at=due_at,
    )


def hook_doorbells(
    definition: Definition[Any, Any], record: Record, now: datetime, due_at: datetime
) -> list[OutboxMessage]:
    """One doorbell per hook of the run-state change ``record`` makes, kept until that hook succeeds."""
    event = HOOK_EVENT_BY_STATE.get(record.run_state)
    if event is None:
        return []
    queue = definition.hook_queue_for(event)
    return [
        OutboxMessage(
            id=hook_doorbell_id(record.run_id, record.meta.version, event, spec.name),
            workflow_name=definition.name,
            run_id=record.run_id,
            kind="hook",
            queue=queue,
            task=queue,
            body={
                "workflow": definition.name,
                "run_id": record.run_id,
                "foreign_id": record.foreign_id,
                "status": record.status,
                "version": record.meta.version,
                "event": event,
                "hook": spec.name,
            },
            created_at=now,
            due_at=due_at,
        )
        for spec in definition.hooks.get(event, [])
    ]


@dataclass(frozen=True, slots=True)
class Doorbells:
    """What a write rings: ``now`` is published right after commit, ``later`` by the relay when due."""

    now: list[OutboxMessage]
    later: list[OutboxMessage]

    @property
    def all(self) -> list[OutboxMessage]:
        return self.now + self.later


class Planner:
    """Decides what a write of a run rings, from the record alone; never raises.

    Every doorbell is due ``redeliver_after`` after it was written (if it is
    still in the outbox then, its message was lost or is stuck, and the relay
    rings it again), except the automatic resume of a paused run, due
    ``auto_resume_after`` later. Timeouts are not planned here: entering a
    status with timeouts rings its *timers* doorbell, and a worker asks the
    timers (``timeout_doorbells``), so a timer that fails is a failed attempt at
    that status rather than a failure of the write that brought the run there.
    """

    def __init__(self, definition: Definition[Any, Any], options: WorkflowOptions) -> None:
        self.definition = definition
        self.options = options
        self._step_queues = {s: definition.queue_for(s) for s in definition.steps}
        self._lags = {s: spec.options.consume_lag for s, spec in definition.steps.items() if spec.options.consume_lag}
        self._status_queues = definition.step_queues()

    def step(self, record: Record, now: datetime) -> OutboxMessage | None:
        """The doorbell of the step at the record's status, if it has one and the run is active.

        With the step's ``consume_lag``, it is due once the run has been at
        the status that long (from ``updated_at``), and the relay rings it then.
        """
        queue = self._step_queues.get(record.status)
        if queue is None or record.run_state not in ACTIVE:
            return None
        ready = self.ready_at(record)
        due_at = ready if ready > now else now + self.options.redeliver_after
        return doorbell(record, queue, now, action=Action.STEP, due_at=due_at)

    def ready_at(self, record: Record) -> datetime:
        """When the step at the record's status may run it: ``updated_at`` plus the step's ``consume_lag``."""
        lag = self._lags.get(record.status)
        return record.updated_at if lag is None else record.updated_at + lag

    def plan(self, record: Record, now: datetime) -> Doorbells:
        """Everything a write of ``record`` rings: its step, timers, automatic resume, data deletion, hooks."""
        ring_now: list[OutboxMessage] = []
        later: list[OutboxMessage] = []
        redeliver = now + self.options.redeliver_after
        step = self.step(record, now)
        if step is not None:
            (later if self.ready_at(record) > now else ring_now).append(step)
        if record.run_state in ACTIVE and self.definition.timeouts.get(record.status):
            queue = self._status_queues[record.status]
            ring_now.append(doorbell(record, queue, now, action=Action.TIMERS, due_at=redeliver))
        step_queue = self._step_queues.get(record.status)
        if record.run_state == RunState.PAUSED and step_queue is not None and self.options.auto_resume_after:
            resume_at = now + self.options.auto_resume_after
            later.append(doorbell(record, step_queue, now, action=Action.RESUME, due_at=resume_at))
        if record.run_state == RunState.REQUESTED_DATA_DELETED:
            queue = self.definition.delete_queue()
            ring_now.append(doorbell(record, queue, now, action=Action.DELETE, due_at=redeliver))
        ring_now.extend(hook_doorbells(self.definition, record, now, redeliver))
        return Doorbells(now=ring_now, later=later)

    def timeouts(self, record: Record, run: TypedRecord[Any, Any], now: datetime) -> list[OutboxMessage]:
        """One doorbell per timeout of the record's status, due when its timer says.

        Each timer is asked ``timer(run, arrived)`` with the time the run
        arrived at the status. They are ordinary version-bound doorbells: the
        run leaving the status deletes them, which is how a timeout is
        cancelled. Raises ``TypeError`` for a timer that returns anything but
        an aware datetime or None, and whatever the timer raises.
        """
        bells = []
        queue = self._status_queues[record.status]
        for index, spec in enumerate(self.definition.timeouts.get(record.status, [])):
            expires = spec.timer(run, record.updated_at)
            if expires is None:
                continue
            if not isinstance(expires, datetime) or expires.tzinfo is None:
                raise TypeError(
                    f"the timer of timeout {index} at {self.definition.status_name(record.status)} returned "
                    f"{expires!r}: expected a timezone-aware datetime or None"
                )
            bells.append(doorbell(record, queue, now, action=Action.TIMEOUT, due_at=expires, timeout=index))
        return bells


def describe_task(definition: Definition[Any, Any] | None, body: Any, attempt: int) -> str:
    """What Flower shows as a task's arguments: which work of which run, and which attempt.

    A Python dict literal (Celery's ``kwargsrepr``), so Flower's search finds
    ``kwargs:foreign_id=order-42``; the message itself still carries
    identifiers only. ``definition`` names the status and the function; a
    doorbell of a workflow this process does not know shows its identifiers.
    """
    if not isinstance(body, Mapping):
        return repr(body)
    status = body.get("status")
    status_name = definition.status_name(status) if definition is not None and type(status) is int else status
    info: dict[str, Any] = {"workflow": body.get("workflow")}
    if "hook" in body:
        hook = body.get("hook")
        info["hook"] = f"{body.get('event')} {hook.split(':', 1)[-1] if isinstance(hook, str) else hook}"
    else:
        info["step"] = _work_label(definition, body, status, status_name)
    info.update(
        foreign_id=body.get("foreign_id"), run_id=body.get("run_id"), version=body.get("version"), attempt=attempt
    )
    return repr(info)


def _work_label(definition: Definition[Any, Any] | None, body: Mapping[str, Any], status: Any, name: Any) -> str:
    action = body.get("action", "step")
    if action == "delete":
        return "data deletion"
    if action == "timers":
        return f"{name} timers"
    if action == "resume":
        return f"{name} auto-resume"
    fn: Any = None
    if definition is not None and type(status) is int:
        if action == "timeout":
            specs = definition.timeouts.get(status, [])
            index = body.get("timeout", 0)
            fn = specs[index].fn if type(index) is int and 0 <= index < len(specs) else None
            return f"{name} timeout {index} {_fn_name(fn)}".rstrip()
        spec = definition.steps.get(status)
        fn = spec.fn if spec is not None else None
    return f"{name} {_fn_name(fn)}".rstrip()


def _fn_name(fn: Any) -> str:
    return "" if fn is None else str(getattr(fn, "__qualname__", None) or type(fn).__name__)
