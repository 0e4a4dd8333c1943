"""``workflow-celery runs bulk``: pause, resume, cancel or delete the data of every run a filter matches.

workflow-celery -A examples.orders runs bulk resume --run-state paused --dry-run
workflow-celery -A examples.orders runs bulk resume --run-state paused --status VALIDATED
workflow-celery -A examples.orders runs bulk cancel --status CREATED --reason "bad batch" --json

The matching runs are read first, by pages, then changed one by one through
the workflow's own calls (hooks fire as for a single run); a run the change
does not apply to any more (it finished meanwhile) is counted as refused, not
an error of the command. A progress bar is drawn on standard error when it is
a terminal.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

import click

from ..core import run_actions
from ..core.errors import InvalidRunStateTransition, WorkflowError
from ..core.workflow import Workflow
from .common import find_workflows, pick, positive, run_state_of, status_value

PAGE = 1000
SHOWN = 10
"""Runs a dry run lists; and refusals the summary lists."""


def add_to(rsub: Any) -> None:
    bulk = rsub.add_parser("bulk", help="pause, resume, cancel or delete the data of every run a filter matches")
    bulk.add_argument("action", choices=list(run_actions.TARGETS))
    bulk.add_argument("--workflow", help="the workflow (needed when the app has several)")
    bulk.add_argument("--status", help="only runs at this status")
    bulk.add_argument("--run-state", help="only runs in this run state (e.g. paused)")
    bulk.add_argument("--foreign-id", help="only runs of this foreign id")
    bulk.add_argument("--reason", default="", help="the reason recorded (pause, cancel, delete-data)")
    bulk.add_argument("--limit", type=positive, help="change at most this many runs (oldest first)")
    bulk.add_argument("--dry-run", action="store_true", help="count and list what would change; change nothing")
    bulk.add_argument("--json", action="store_true", help="print the summary as JSON")
    bulk.set_defaults(func=cmd_bulk, needs_app=True)


def _matching(wf: Workflow[Any, Any], filters: dict[str, Any], limit: int | None) -> list[tuple[str, str]]:
    """``(run_id, foreign_id)`` of the matching runs, oldest first, read before anything changes."""
    found: list[tuple[str, str]] = []
    while limit is None or len(found) < limit:
        page = wf.store.list_runs(wf.name, **filters, limit=PAGE, offset=len(found), order="asc")
        found += [(r.run_id, r.foreign_id) for r in page]
        if len(page) < PAGE:
            break
    return found if limit is None else found[:limit]


def cmd_bulk(args: argparse.Namespace) -> int:
    wf = pick(find_workflows(args.app), args.workflow)
    filters: dict[str, Any] = {
        "status": None if args.status is None else int(status_value(wf, args.status)),
        "run_state": None if args.run_state is None else run_state_of(args.run_state),
        "foreign_id": args.foreign_id,
    }
    runs = _matching(wf, filters, args.limit)
    summary: dict[str, Any] = {"workflow": wf.name, "action": args.action, "matched": len(runs)}
    if args.dry_run:
        summary["dry_run"] = True
        summary["first"] = [{"run_id": r, "foreign_id": f} for r, f in runs[:SHOWN]]
        return _report(args, summary)
    changed, refused, failed = 0, [], []
    # On a terminal only: a log file or a pipe gets the summary, not the bar's label.
    shown = sys.stderr.isatty()
    bar = click.progressbar(
        length=len(runs), label=f"{args.action} {wf.name}", file=sys.stderr if shown else io.StringIO(), show_pos=True
    )
    with bar:
        for run_id, foreign_id in runs:
            try:
                run_actions.apply(wf, args.action, run_id, args.reason)
                changed += 1
            except InvalidRunStateTransition as exc:
                refused.append({"run_id": run_id, "foreign_id": foreign_id, "why": str(exc)})
            except WorkflowError as exc:
                failed.append({"run_id": run_id, "foreign_id": foreign_id, "why": str(exc)})
            bar.update(1)
    summary.update(changed=changed, refused=len(refused), failed=len(failed))
    summary["first_refused"], summary["first_failed"] = refused[:SHOWN], failed[:SHOWN]
    _report(args, summary)
    return 1 if failed else 0


def _report(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if summary.get("dry_run"):
        print(f"dry run: {summary['action']} would be tried on {summary['matched']} run(s) of {summary['workflow']}")
        for run in summary["first"]:
            print(f"  {run['run_id']}  {run['foreign_id']}")
        if summary["matched"] > len(summary["first"]):
            print(f"  ... and {summary['matched'] - len(summary['first'])} more")
        return 0
    print(
        f"{summary['action']}: {summary['changed']} of {summary['matched']} run(s) of {summary['workflow']} changed, "
        f"{summary['refused']} refused, {summary['failed']} failed"
    )
    for kind in ("first_refused", "first_failed"):
        for run in summary[kind]:
            print(f"  {kind.split('_')[1]} {run['run_id']} ({run['foreign_id']}): {run['why']}")
    return 0
