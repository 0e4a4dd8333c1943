"""Lag: how long runs have waited at the statuses with a step, and the alert when it is too long.

Measured from the database (``WaitingRuns``), so every worker sees the same
figure whichever of them ran the steps: per status, the in-progress runs
waiting there and the oldest one's wait, less the step's ``consume_lag``
(a lagged step's runs are meant to wait that long). A status whose oldest
wait exceeds its ``lag_alert`` is alerting: a WARNING line when it starts,
again every ``REPEAT_ALERT`` while it lasts, an INFO line when it ends; the
gauges ``workflow_process_lag_seconds`` and ``workflow_process_lag_alert``
(the original's names, luno/workflow; ``process_name`` is the status' queue)
are measured again at each scrape (``adapters.prometheus.DatabaseCollector``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .workflow import Workflow

log = logging.getLogger(__name__)

REPEAT_ALERT = timedelta(minutes=10)


@dataclass(frozen=True)
class Waiting:
    """In-progress runs at one status: how many, and the ``updated_at`` of the one waiting longest."""

    status: int
    count: int
    oldest: datetime


@runtime_checkable
class WaitingRuns(Protocol):
    """The store role lag and the run gauges are measured from."""

    def waiting_runs(self, workflow_name: str, statuses: Sequence[int]) -> list[Waiting]:
        """Initiated or running runs at each of ``statuses`` that has any: count and oldest ``updated_at``."""
        ...

    def runs_by_status(self, workflow_name: str) -> list[tuple[int, int, int]]:
        """``(status, run_state, count)`` of the workflow's runs, for every pair that has any."""
        ...


@dataclass(frozen=True)
class Lag:
    """One status' lag at one moment: ``seconds`` waited by its oldest run (0 with none), and whether it alerts."""

    status: int
    process_name: str
    waiting: int
    seconds: float
    threshold: timedelta | None
    alert: bool


def measure(wf: Workflow[Any, Any], now: datetime) -> list[Lag]:
    """The lag of every status of ``wf`` with a step; empty when its store is not ``WaitingRuns``."""
    if not isinstance(wf.store, WaitingRuns):
        return []
    steps = wf.definition.steps
    found = {w.status: w for w in wf.store.waiting_runs(wf.name, sorted(steps))}
    lags = []
    for status, spec in sorted(steps.items()):
        waiting = found.get(status)
        seconds = 0.0
        if waiting is not None:
            expected = spec.options.consume_lag or timedelta(0)
            seconds = max((now - waiting.oldest - expected).total_seconds(), 0.0)
        threshold = spec.options.lag_alert if spec.options.lag_alert is not None else wf.options.lag_alert
        if threshold is not None and threshold <= timedelta(0):
            threshold = None
        alert = threshold is not None and seconds > threshold.total_seconds()
        lags.append(
            Lag(status, wf.definition.queue_for(status), waiting.count if waiting else 0, seconds, threshold, alert)
        )
    return lags


class LagWatch:
    """Logs alerts as they start, last and end (the gauges are read from the database on each scrape)."""

    def __init__(self) -> None:
        self._alerting: dict[str, datetime] = {}

    def check(self, wf: Workflow[Any, Any], now: datetime) -> list[Lag]:
        lags = measure(wf, now)
        for lag in lags:
            self._log(wf, lag, now)
        return lags

    def _log(self, wf: Workflow[Any, Any], lag: Lag, now: datetime) -> None:
        since = self._alerting.get(lag.process_name)
        if lag.alert and (since is None or now - since >= REPEAT_ALERT):
            self._alerting[lag.process_name] = now
            log.warning(
                "lag alert: %d run(s) waiting at %s of workflow %s, the oldest for %s (lag_alert %s)",
                lag.waiting, wf.definition.status_name(lag.status), wf.name,
                timedelta(seconds=int(lag.seconds)), lag.threshold,
                extra={"workflow": wf.name, "queue": lag.process_name},
            )  # fmt: skip
        elif not lag.alert and since is not None:
            del self._alerting[lag.process_name]
            log.info(
                "lag alert over: %s of workflow %s, the oldest run waiting for %s",
                wf.definition.status_name(lag.status), wf.name, timedelta(seconds=int(lag.seconds)),
            )  # fmt: skip
