"""``workflow-celery hooks``: see and discard the pending executions of hooks.

workflow-celery -A examples.orders hooks pending
workflow-celery -A examples.orders hooks discard --event completed --hook send_sms --dry-run

A hook's pending executions are doorbells in the outbox, named after the hook.
A worker that does not know a hook leaves its doorbells for one that does, so
the doorbells of a hook that was removed (or renamed) wait until an operator
discards them here.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from ..core.definition import HOOK_EVENTS
from ..core.doorbell import legacy_hook_label
from ..core.hooks import find_hook
from ..core.ports import OutboxMessage
from ..core.workflow import Workflow
from .common import CliError, app_name, find_workflows, pick

EVENT_CHOICES = [*HOOK_EVENTS, "data-deleted"]


def add_commands(commands: Any) -> None:
    """Add ``hooks pending`` and ``hooks discard`` to the command's subparsers."""
    hooks = commands.add_parser("hooks", help="see and discard pending hook executions")
    sub = hooks.add_subparsers(dest="hooks_command", required=True, metavar="COMMAND")
    pending = sub.add_parser("pending", help="pending hook executions, by workflow, event and hook")
    pending.add_argument("--workflow", help="only this workflow's")
    pending.add_argument("--json", action="store_true")
    pending.set_defaults(func=cmd_pending, needs_app=True)
    discard = sub.add_parser("discard", help="delete the pending executions of one hook, which then never run")
    discard.add_argument("--workflow", help="the workflow (needed when the app has several)")
    discard.add_argument("--event", required=True, choices=EVENT_CHOICES)
    discard.add_argument("--hook", required=True, help="the hook's name, as `hooks pending` shows it")
    discard.add_argument("--dry-run", action="store_true", help="list what would be discarded, discard nothing")
    discard.add_argument("--force", action="store_true", help="discard even a hook this app registers")
    discard.set_defaults(func=cmd_discard, needs_app=True)


def _hook_rows(wf: Workflow[Any, Any], event: str) -> list[OutboxMessage]:
    queue = wf.definition.hook_queue_for(event)
    return [m for m in wf.store.outbox(queue=queue) if m.kind == "hook" and isinstance(m.body.get("hook"), str)]


def _names(label: str, hook: str) -> bool:
    """Whether a doorbell's hook label is the hook ``hook``: by name, or an older label by its qualified name."""
    if label == hook:
        return True
    legacy = legacy_hook_label(label)
    return legacy is not None and legacy[1] == hook


def cmd_pending(args: argparse.Namespace) -> int:
    workflows = find_workflows(args.app)
    chosen = [pick(workflows, args.workflow)] if args.workflow else [workflows[n] for n in sorted(workflows)]
    lines: list[tuple[str, str, str, str, str]] = []
    for wf in chosen:
        for event in HOOK_EVENTS:
            rows = _hook_rows(wf, event)
            counts = Counter(str(m.body["hook"]) for m in rows)
            for hook, count in sorted(counts.items()):
                known = "yes" if find_hook(wf.definition, event, hook) is not None else "no"
                lines.append((wf.name, event, hook, str(count), known))
    if args.json:
        keys = ("workflow", "event", "hook", "pending", "known_here")
        rows_out = [dict(zip(keys, (w, e, h, int(n), k == "yes"), strict=True)) for w, e, h, n, k in lines]
        print(json.dumps({"pending": rows_out}, indent=2))
        return 0
    if not lines:
        print(f"no pending hook execution ({', '.join(wf.name for wf in chosen)})")
        return 0
    header = ("WORKFLOW", "EVENT", "HOOK", "PENDING", "KNOWN HERE")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_discard(args: argparse.Namespace) -> int:
    wf = pick(find_workflows(args.app), args.workflow)
    event = args.event.replace("-", "_")
    rows = [m for m in _hook_rows(wf, event) if _names(str(m.body["hook"]), args.hook)]
    what = f"{event} hook {args.hook!r} of workflow {wf.name}"
    labels = {args.hook, *(str(m.body["hook"]) for m in rows)}
    if any(find_hook(wf.definition, event, label) is not None for label in labels) and not args.force:
        raise CliError(
            f"{what} is registered in {app_name(args.app)}: its workers run these executions; "
            "stop registering it first, or pass --force to discard them anyway"
        )
    if not rows:
        print(f"no pending execution of {what}")
        return 0
    if not args.dry_run:
        wf.store.delete_outbox([m.id for m in rows])
    verb = "would discard" if args.dry_run else "discarded"
    print(f"{verb} {len(rows)} pending execution(s) of {what}:")
    for m in rows:
        print(
            f"  run {m.run_id} v{m.body.get('version')} ({m.body.get('foreign_id')})  due {m.due_at.isoformat()}  "
            f"published {m.attempts} time(s) by the relay"
        )
    return 0
