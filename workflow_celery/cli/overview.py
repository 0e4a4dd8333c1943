"""``workflow-celery graph`` and ``workflow-celery status``: the workflows' graphs, and how their runs and stores are.

workflow-celery -A examples.orders graph                  # every workflow's mermaid diagram
workflow-celery -A examples.orders graph --out docs/graphs # one {workflow}.md file each
workflow-celery -A examples.orders status [--json]        # runs, lag, outbox, dead letters, schedules, reconciler
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.lag import WaitingRuns, measure
from ..core.ports import RecordStore, one_per_database
from ..core.run_state import RunState
from ..core.schedules import ScheduleStore
from ..core.workflow import Workflow
from .common import CliError, find_workflows, pick

STRANDED_LIMIT = 1000


def add_commands(sub: Any) -> None:
    """Add ``graph`` and ``status`` to the command's sub-parsers."""
    graph = sub.add_parser("graph", help="every workflow's status graph as a mermaid diagram")
    graph.add_argument("--workflow", help="only this workflow")
    graph.add_argument("--out", type=Path, help="write {workflow}.md files in this folder instead of printing")
    graph.set_defaults(func=cmd_graph, needs_app=True)
    status = sub.add_parser("status", help="runs, lag, outbox, dead letters, schedules and the reconciler's view")
    status.add_argument("--workflow", help="only this workflow")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status, needs_app=True)


def _chosen(args: argparse.Namespace) -> list[Workflow[Any, Any]]:
    workflows = find_workflows(args.app)
    if args.workflow is not None:
        return [pick(workflows, args.workflow)]
    return [workflows[name] for name in sorted(workflows)]


def cmd_graph(args: argparse.Namespace) -> int:
    for wf in _chosen(args):
        if args.out is None:
            print(f"{wf.visualise().rstrip()}\n")  # each diagram's front matter names its workflow
            continue
        if args.out.exists() and not args.out.is_dir():
            raise CliError(f"--out {args.out} is a file: give a folder (it is created if missing)")
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{wf.name}.md"
        path.write_text(f"# {wf.name}\n\n```mermaid\n{wf.visualise().rstrip()}\n```\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _ago(then: datetime, now: datetime) -> float:
    return round((now - then).total_seconds(), 3)


def _workflow_status(wf: Workflow[Any, Any]) -> dict[str, Any]:
    now = wf.clock.now()
    report: dict[str, Any] = {"workflow": wf.name}
    if isinstance(wf.store, WaitingRuns):
        by_state: dict[str, int] = {}
        for _status, state, count in wf.store.runs_by_status(wf.name):
            name = RunState(state).name
            by_state[name] = by_state.get(name, 0) + count
        report["runs"] = by_state
        report["lag"] = [
            {"queue": lag.process_name, "waiting": lag.waiting, "seconds": round(lag.seconds, 3), "alert": lag.alert}
            for lag in measure(wf, now)
        ]
    stranded = wf.store.stranded_runs(
        wf.name, list(wf.definition.steps), now - wf.options.redeliver_after, STRANDED_LIMIT
    )
    report["stranded_runs"] = len(stranded)
    if isinstance(wf.store, ScheduleStore):
        schedules = wf.store.schedules(wf.name)
        report["schedules"] = len(schedules)
        report["schedules_due"] = sum(s.next_slot <= now for s in schedules)
    return report


def _store_status(store: RecordStore, now: datetime) -> dict[str, Any]:
    pending = store.outbox()
    due = [m for m in pending if m.due_at <= now]
    return {
        "store": repr(store),
        "outbox_pending": len(pending),
        "outbox_due_now": len(due),
        "outbox_oldest_due_seconds": _ago(min(m.due_at for m in due), now) if due else 0.0,
        "outbox_published_again": sum(m.attempts > 0 for m in pending),
        "dead_letters": store.count_dead_letters(),
    }


def cmd_status(args: argparse.Namespace) -> int:
    workflows = _chosen(args)
    stores = one_per_database(workflows, lambda wf: wf.store)
    report = {
        "workflows": [_workflow_status(wf) for wf in workflows],
        "stores": [_store_status(wf.store, wf.clock.now()) for wf in stores],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for w in report["workflows"]:
        runs = ", ".join(f"{n} {s.lower()}" for s, n in sorted(w.get("runs", {}).items())) or "none"
        print(f"workflow {w['workflow']}: runs {runs}")
        for lag in w.get("lag", []):
            if not lag["waiting"]:
                print(f"  {lag['queue']}: none waiting")
                continue
            flag = "  LAG ALERT" if lag["alert"] else ""
            print(f"  {lag['queue']}: {lag['waiting']} waiting, the oldest for {lag['seconds']:.0f}s{flag}")
        if "schedules" in w:
            print(f"  schedules: {w['schedules']} ({w['schedules_due']} due now)")
        print(f"  reconciler: {w['stranded_runs']} run(s) with no doorbell (rung again at its next round)")
    for s in report["stores"]:
        print(f"store {s['store']}:")
        overdue = f"the oldest {s['outbox_oldest_due_seconds']:.0f}s overdue"
        print(
            f"  outbox: {s['outbox_pending']} pending, {s['outbox_due_now']} due now ({overdue}),"
            f" {s['outbox_published_again']} published again"
        )
        print(f"  dead letters: {s['dead_letters']}")
    return 0
