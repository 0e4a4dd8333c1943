"""What a process counts: the ``Metrics`` port, its no-op, and the filling-in of an older metrics object."""

from __future__ import annotations

from typing import Protocol

from .run_state import RunState


class Metrics(Protocol):
    """Where a process counts what it does (Prometheus in workers, nothing by default).

    An object given as ``build(metrics=...)`` may have any of these methods;
    ``complete_metrics`` fills in the others with no-ops.
    """

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None: ...

    def doorbell_answered(self, workflow: str, process: str, seconds: float, outcome: str) -> None:
        """A doorbell of ``process`` (its queue) was answered in ``seconds``; ``outcome`` is the answer's."""
        ...

    def run_state_changed(self, workflow: str, previous: RunState, current: RunState) -> None:
        """This process committed a run's change of run state."""
        ...


class NoMetrics:
    """Counts nothing."""

    def hook_finished(self, workflow: str, hook: str, seconds: float, ok: bool) -> None:
        return None

    def doorbell_answered(self, workflow: str, process: str, seconds: float, outcome: str) -> None:
        return None

    def run_state_changed(self, workflow: str, previous: RunState, current: RunState) -> None:
        return None


class _Completed(NoMetrics):
    def __init__(self, given: object) -> None:
        for name in ("hook_finished", "doorbell_answered", "run_state_changed"):
            method = getattr(given, name, None)
            if callable(method):
                setattr(self, name, method)


def complete_metrics(given: object | None) -> Metrics:
    """``given`` with a no-op for each ``Metrics`` method it lacks (an object made for an older version)."""
    if given is None:
        return NoMetrics()
    return _Completed(given)
