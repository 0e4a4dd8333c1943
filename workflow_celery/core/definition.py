"""What a ``Builder`` produces: an immutable description of a workflow."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .connectors import ConnectorSpec
from .options import StepOptions
from .run_state import RunState
from .status_graph import StatusGraph, status_slug

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

HookFn = Callable[..., Any]

HOOK_EVENTS = ("completed", "cancelled", "paused", "data_deleted")
HOOK_EVENT_BY_STATE: dict[RunState, str] = {
    RunState.COMPLETED: "completed",
    RunState.CANCELLED: "cancelled",
    RunState.PAUSED: "paused",
    RunState.DATA_DELETED: "data_deleted",
}
"""The hook event a change to each run state fires."""


@dataclass(frozen=True)
class StepSpec:
    status: int
    fn: Callable[..., Any]
    destinations: tuple[int, ...]
    options: StepOptions
    is_async: bool


@dataclass(frozen=True)
class CallbackSpec:
    status: int
    fn: Callable[..., Any]
    destinations: tuple[int, ...]
    is_async: bool


@dataclass(frozen=True)
class TimeoutSpec:
    status: int
    timer: Callable[..., Any]
    fn: Callable[..., Any]
    destinations: tuple[int, ...]
    is_async: bool


@dataclass(frozen=True)
class HookSpec:
    """A hook and the name that identifies it among the hooks of its event (see ``core.hooks``)."""

    name: str
    fn: HookFn


@dataclass
class Definition(Generic[T, S]):
    """Everything needed to run a workflow, independent of broker and store."""

    name: str
    object_type: type[T]
    status_type: type[S]
    graph: StatusGraph
    steps: dict[int, StepSpec] = field(default_factory=dict)
    callbacks: dict[int, list[CallbackSpec]] = field(default_factory=dict)
    timeouts: dict[int, list[TimeoutSpec]] = field(default_factory=dict)
    hooks: dict[str, list[HookSpec]] = field(default_factory=dict)
    connectors: dict[str, ConnectorSpec] = field(default_factory=dict)

    def status(self, value: int) -> S:
        return self.status_type(value)

    def status_name(self, value: int) -> str:
        try:
            return self.status_type(value).name
        except ValueError:
            return f"{self.status_type.__name__}({value})"

    def queue_for(self, status: int) -> str:
        """``{workflow}.{status}``: the queue (and Celery task name) of a status' step."""
        return f"{self.name}.{status_slug(self.status_type(status))}"

    def delete_queue(self) -> str:
        """Where data-deletion requests are answered (a hyphen: no status slug can collide)."""
        return f"{self.name}.data-deletion"

    def hook_queue_for(self, event: str) -> str:
        """``{workflow}.hooks.{event}``; ``data_deleted`` is spelled ``data-deleted`` like every queue name."""
        return f"{self.name}.hooks.{event.replace('_', '-')}"

    def step_queues(self) -> dict[int, str]:
        """The queue of every status a worker acts on: those with a step or a timeout."""
        return {s: self.queue_for(s) for s in [*self.steps, *(t for t in self.timeouts if t not in self.steps)]}

    def queues(self) -> list[str]:
        """Every queue this workflow declares, in a stable order."""
        names = list(self.step_queues().values())
        names.append(self.delete_queue())
        names += [self.hook_queue_for(e) for e in HOOK_EVENTS if self.hooks.get(e)]
        return names
