"""Run states and the table of transitions allowed between them."""

from __future__ import annotations

import enum

from .errors import InvalidRunStateTransition


class RunState(enum.IntEnum):
    """Lifecycle of a run, independent of the workflow's own statuses."""

    INITIATED = 1
    RUNNING = 2
    PAUSED = 3
    CANCELLED = 4
    COMPLETED = 5
    DATA_DELETED = 6
    REQUESTED_DATA_DELETED = 7

    @property
    def finished(self) -> bool:
        """True once the run can never move again (its data may still be deleted)."""
        return self in _FINISHED

    @property
    def stopped(self) -> bool:
        """True while no step may run: paused, cancelled or (being) deleted."""
        return self in _STOPPED

    @property
    def in_progress(self) -> bool:
        """True while the run blocks a new trigger for its foreign id."""
        return self in _IN_PROGRESS

    @property
    def as_active(self) -> RunState:
        """The state a pause or cancel starts from: a just-started (``INITIATED``) run is seen as ``RUNNING``."""
        return RunState.RUNNING if self is RunState.INITIATED else self

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").title()


_FINISHED = frozenset({RunState.COMPLETED, RunState.CANCELLED, RunState.DATA_DELETED, RunState.REQUESTED_DATA_DELETED})
_STOPPED = frozenset({RunState.PAUSED, RunState.CANCELLED, RunState.DATA_DELETED, RunState.REQUESTED_DATA_DELETED})
_IN_PROGRESS = frozenset({RunState.INITIATED, RunState.RUNNING, RunState.PAUSED})
IN_PROGRESS_VALUES: tuple[int, ...] = tuple(sorted(int(s) for s in _IN_PROGRESS))

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.INITIATED: frozenset({RunState.RUNNING, RunState.PAUSED}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.CANCELLED, RunState.COMPLETED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.COMPLETED: frozenset({RunState.REQUESTED_DATA_DELETED}),
    RunState.CANCELLED: frozenset({RunState.REQUESTED_DATA_DELETED}),
    RunState.REQUESTED_DATA_DELETED: frozenset({RunState.DATA_DELETED}),
    RunState.DATA_DELETED: frozenset({RunState.REQUESTED_DATA_DELETED}),
}
"""Allowed run-state changes; the same table luno/workflow enforces."""


def can_transition(current: RunState, target: RunState, *, by_hand: bool = False) -> bool:
    """Whether the table allows ``current`` -> ``target``.

    ``by_hand``: a change asked for from outside the steps (pause, resume,
    cancel, a delete request). Then only a ``PAUSED`` run may go to
    ``RUNNING``: an ``INITIATED`` run gets there through its own step, and
    resuming it would skip the backoff of a failed first attempt. (The
    original lets such a resume through.)
    """
    if by_hand and target is RunState.RUNNING and current is not RunState.PAUSED:
        return False
    return target in TRANSITIONS[current]


def check_transition(
    current: RunState,
    target: RunState,
    *,
    workflow: str | None = None,
    run_id: str | None = None,
    foreign_id: str | None = None,
    by_hand: bool = False,
) -> None:
    """Raise :class:`InvalidRunStateTransition` naming both states and why, if not allowed (see ``can_transition``)."""
    if not can_transition(current, target, by_hand=by_hand):
        raise InvalidRunStateTransition(
            f"invalid run state transition: from {current.name} to {target.name}: {_why_not(current, target, by_hand)}",
            workflow=workflow,
            foreign_id=foreign_id,
            run_id=run_id,
        )


def _why_not(current: RunState, target: RunState, by_hand: bool) -> str:
    if current is target:
        return f"the run is {current.name} already"
    if by_hand and target is RunState.RUNNING:
        return "only a PAUSED run can be resumed"
    allowed = sorted(s.name for s in TRANSITIONS[current] if can_transition(current, s, by_hand=by_hand))
    return f"a run that is {current.name} can only become {' or '.join(allowed)}" if allowed else "it is final"
