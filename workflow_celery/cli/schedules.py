"""``workflow-celery schedules``: list schedules, show what became of their slots, remove one.

workflow-celery -A examples.orders schedules list [--workflow NAME] [--json]
workflow-celery -A examples.orders schedules slots FOREIGN_ID [--workflow NAME] [--limit N] [--json]
workflow-celery -A examples.orders schedules remove FOREIGN_ID [--workflow NAME]

Schedules are defined by ``wf.schedule(...)`` in code; the command reads and
removes them. Times are UTC, as stored; ``list`` shows each schedule's time
zone, in which its spec is read.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

from ..core.schedules import Schedule, ScheduleSlot
from ..core.workflow import Workflow
from .common import CliError, find_workflows, pick, positive

OVERDUE = timedelta(seconds=60)
"""A next slot this far in the past means no worker is firing the schedule."""


def add_commands(sub: Any) -> None:
    """Add ``schedules list|slots|remove`` to the command's sub-parsers."""
    sch = sub.add_parser("schedules", help="list schedules, show their slots, remove one")
    ssub = sch.add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    ls = ssub.add_parser("list", help="every schedule with its next slot and last outcome")
    ls.add_argument("--workflow", help="only this workflow's schedules")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list, needs_app=True)
    slots = ssub.add_parser("slots", help="what became of a schedule's slots, newest first")
    slots.add_argument("foreign_id")
    slots.add_argument("--workflow", help="the schedule's workflow (needed when the app has several)")
    slots.add_argument("--limit", type=positive, default=25, help="slots to show")
    slots.add_argument("--json", action="store_true")
    slots.set_defaults(func=cmd_slots, needs_app=True)
    rm = ssub.add_parser("remove", help="remove a schedule (the runs it started are kept)")
    rm.add_argument("foreign_id")
    rm.add_argument("--workflow", help="the schedule's workflow (needed when the app has several)")
    rm.set_defaults(func=cmd_remove, needs_app=True)


def _at(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _schedule_row(s: Schedule) -> dict[str, Any]:
    return {
        "workflow": s.workflow_name,
        "foreign_id": s.foreign_id,
        "spec": s.spec,
        "time_zone": s.time_zone,
        "catch_up": s.catch_up,
        "filter": s.filter,
        "next_slot": _at(s.next_slot),
        "last_slot": _at(s.last_slot),
        "last_outcome": s.last_outcome,
        "last_run_id": s.last_run_id,
    }


def _slot_row(s: ScheduleSlot) -> dict[str, Any]:
    return {
        "slot": _at(s.slot_at),
        "outcome": str(s.outcome),
        "run_id": s.run_id,
        "detail": s.detail,
        "recorded_at": _at(s.recorded_at),
    }


MAX_CELL = 60
"""A table cell's width at most (``--json`` gives every value whole)."""


def _cell(value: Any) -> str:
    """A value as one line of printable text: escapes for control characters, long values cut short."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    cells = [{c: _cell(r[c]) for c in cols} for r in rows]
    widths = {c: max([len(c), *(len(r[c]) for r in cells)]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in cells:
        print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())


def _workflows(args: argparse.Namespace) -> list[Workflow[Any, Any]]:
    workflows = find_workflows(args.app)
    if args.workflow is not None:
        return [pick(workflows, args.workflow)]
    return [workflows[name] for name in sorted(workflows)]


def cmd_list(args: argparse.Namespace) -> int:
    found = [(wf, s) for wf in _workflows(args) for s in wf.schedules()]
    rows = [_schedule_row(s) for _, s in found]
    if args.json:
        print(json.dumps({"schedules": rows}, indent=2))
        return 0
    _table(rows, ["workflow", "foreign_id", "spec", "time_zone", "next_slot", "last_slot", "last_outcome"])
    print(f"({len(rows)} schedule{'' if len(rows) == 1 else 's'})")
    overdue = [s.foreign_id for wf, s in found if wf.clock.now() - s.next_slot > OVERDUE]
    if overdue:
        print(
            f"{len(overdue)} schedule(s) due more than a minute ago and not fired ({', '.join(overdue[:5])}): "
            "is a worker of the app running?"
        )
    return 0


def _owner(args: argparse.Namespace) -> Workflow[Any, Any]:
    found = [wf for wf in _workflows(args) if any(s.foreign_id == args.foreign_id for s in wf.schedules())]
    if not found:
        raise CliError(f"no schedule for foreign id {args.foreign_id!r}")
    if len(found) > 1:
        names = ", ".join(wf.name for wf in found)
        raise CliError(f"several workflows ({names}) schedule {args.foreign_id!r}: choose one with --workflow")
    return found[0]


def cmd_slots(args: argparse.Namespace) -> int:
    wf = _owner(args)
    rows = [_slot_row(s) for s in wf.schedule_slots(args.foreign_id, limit=args.limit)]
    if args.json:
        print(json.dumps({"workflow": wf.name, "foreign_id": args.foreign_id, "slots": rows}, indent=2))
        return 0
    _table(rows, ["slot", "outcome", "run_id", "detail"])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    wf = _owner(args)
    wf.unschedule(args.foreign_id)
    print(f"removed the schedule of {args.foreign_id!r} from workflow {wf.name}")
    return 0
