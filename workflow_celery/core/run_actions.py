"""The operator's run-state changes by name: what the CLI, its bulk command and the web UI offer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .run_state import RunState, can_transition

if TYPE_CHECKING:
    from .workflow import Workflow

TARGETS: dict[str, RunState] = {
    "pause": RunState.PAUSED,
    "resume": RunState.RUNNING,
    "cancel": RunState.CANCELLED,
    "delete-data": RunState.REQUESTED_DATA_DELETED,
}
"""Each action and the run state it asks for."""


def apply(wf: Workflow[Any, Any], action: str, run_id: str, reason: str) -> None:
    """``wf.pause``, ``resume``, ``cancel`` or ``delete_data`` by name (``resume`` takes no reason).

    Raises ``KeyError`` for an unknown action and whatever the call raises
    (``InvalidRunStateTransition``).
    """
    if action == "resume":
        wf.resume(run_id)
        return
    {"pause": wf.pause, "cancel": wf.cancel, "delete-data": wf.delete_data}[action](run_id, reason)


def allowed(state: RunState) -> list[str]:
    """The actions ``state`` allows (a just-started run is seen as running, as ``pause`` sees it)."""
    return [
        a
        for a, target in TARGETS.items()
        if can_transition(state.as_active if a == "pause" else state, target, by_hand=True)
    ]
