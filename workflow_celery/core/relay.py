"""The outbox relay and the reconciler, one round each: plain functions over a workflow's store.

Threads that run them now and then belong to whoever owns the process (a
worker's bootstep, the in-process broker); see ``maintenance``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workflow import Workflow

log = logging.getLogger(__name__)


def relay_once(wf: Workflow[Any, Any], now: datetime, *, limit: int = 500) -> int:
    """Publish the doorbells due at ``now`` (lost, never published, far retries); return how many.

    Doorbells of other workflows sharing the store are published too: a
    message names its own queue, so any process connected to the broker can
    ring it. Safe to run in every worker at once: each due row is taken by
    one caller, and its next due time pushed out (``claim_due_outbox``).
    """
    due = wf.store.claim_due_outbox(
        now,
        limit=limit,
        redeliver_after=wf.options.redeliver_after,
        max_interval=wf.options.max_redeliver_interval,
    )
    wf.transitions.publish(due)
    return len(due)


def reconcile_once(wf: Workflow[Any, Any], now: datetime, *, limit: int = 500) -> int:
    """Ring again runs that nothing would move: in progress, idle for ``redeliver_after``, no doorbell.

    The outbox normally makes this impossible; this is the safety net for rows
    removed by hand or lost with a restored backup. Safe to run in every
    worker: re-inserting a doorbell is idempotent (its id is the run id and
    version). Returns how many runs were rung.
    """
    stranded = wf.store.stranded_runs(wf.name, list(wf.definition.steps), now - wf.options.redeliver_after, limit)
    plans = [wf.planner.plan(r, now) for r in stranded]
    if plans:
        # Doorbells due later (a step's consume_lag) are kept for the relay; the others ring now.
        wf.store.insert_outbox([b for p in plans for b in p.all])
        wf.transitions.publish([b for p in plans for b in p.now])
        log.warning("re-enqueued %d stranded run(s) of workflow %s", len(stranded), wf.name)
    return len(stranded)
