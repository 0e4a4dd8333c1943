"""``workflow-celery runs``: list runs, show one with its history and errors, pause, resume, cancel, delete data."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core import run_actions
from ..core.errors import RecordNotFound
from ..core.ports import one_per_database
from ..core.record import Record
from ..core.workflow import Workflow
from . import bulk
from .common import CliError, find_workflows, not_negative, pick, positive, run_state_of, status_value


def add_commands(sub: Any) -> None:
    """Add ``runs list|show|pause|resume|cancel|delete-data`` to the command's sub-parsers."""
    runs = sub.add_parser("runs", help="list, show and control runs")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    ls = rsub.add_parser("list", help="list runs, newest first")
    ls.add_argument("--workflow")
    ls.add_argument("--status")
    ls.add_argument("--run-state")
    ls.add_argument("--foreign-id")
    ls.add_argument("--limit", type=positive, default=25, help="runs per page")
    ls.add_argument("--offset", type=not_negative, default=0, help="runs to skip")
    ls.add_argument("--order", choices=["asc", "desc"], default="desc")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list, needs_app=True)
    show = rsub.add_parser("show", help="one run with its history, errors and pending messages")
    _add_run_selector(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show, needs_app=True)
    for action in run_actions.TARGETS:
        c = rsub.add_parser(action, help=f"{action} a run")
        _add_run_selector(c)
        if action != "resume":
            c.add_argument("--reason", default="")
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=cmd_control, needs_app=True, action=action)
    bulk.add_to(rsub)


def _add_run_selector(command: argparse.ArgumentParser) -> None:
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", help="a run id, or enough of its start to name one run")
    which.add_argument("--foreign-id", help="the latest run of this foreign id")
    command.add_argument("--workflow", help="look only at this workflow's runs")


def _find_run(workflows: dict[str, Workflow[Any, Any]], args: argparse.Namespace) -> tuple[Workflow[Any, Any], Record]:
    """The run named by a run id, a unique prefix of one, or ``--foreign-id`` (its latest run)."""
    if args.workflow is not None:
        workflows = {args.workflow: pick(workflows, args.workflow)}
    if args.foreign_id is not None:
        return _latest_run(workflows, args.foreign_id)
    return _for_run(workflows, args.run_id)


def _for_run(workflows: dict[str, Workflow[Any, Any]], run_id: str) -> tuple[Workflow[Any, Any], Record]:
    if not run_id:
        raise CliError("give a run id (or a unique prefix of one) or --foreign-id")
    stores = one_per_database(wf.store for wf in workflows.values())
    names = sorted(workflows)
    one = names[0] if len(names) == 1 else None
    matches: list[Record] = []
    for store in stores:
        try:
            matches = [store.lookup(run_id)]
            break
        except RecordNotFound:
            matches += store.list_runs(one, run_id_prefix=run_id, limit=2)
    if not matches:
        raise CliError(f"run {run_id!r} not found (workflows: {', '.join(names)})")
    if len(matches) > 1:
        count = sum(store.count_runs(one, run_id_prefix=run_id) for store in stores)
        raise CliError(f"run id prefix {run_id!r} matches {count} runs: give more of the run id")
    record = matches[0]
    if record.workflow_name in workflows:
        return workflows[record.workflow_name], record
    raise CliError(f"run {record.run_id} belongs to workflow {record.workflow_name!r}, not {', '.join(names)}")


def _latest_run(workflows: dict[str, Workflow[Any, Any]], foreign_id: str) -> tuple[Workflow[Any, Any], Record]:
    found: list[tuple[Workflow[Any, Any], Record]] = []
    for name, wf in sorted(workflows.items()):
        try:
            found.append((wf, wf.store.latest(name, foreign_id)))
        except RecordNotFound:
            continue
    if not found:
        raise CliError(f"no run for foreign id {foreign_id!r} (workflows: {', '.join(sorted(workflows))})")
    if len(found) > 1:
        raise CliError(
            f"foreign id {foreign_id!r} has runs in {len(found)} workflows "
            f"({', '.join(wf.name for wf, _ in found)}): choose one with --workflow"
        )
    return found[0]


def _row(wf: Workflow[Any, Any], r: Record) -> dict[str, Any]:
    return {
        "workflow": r.workflow_name,
        "foreign_id": r.foreign_id,
        "run_id": r.run_id,
        "run_state": r.run_state.name,
        "status": wf.definition.status_name(r.status),
        "version": r.meta.version,
        "reason": r.meta.run_state_reason,
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
    }


def cmd_list(args: argparse.Namespace) -> int:
    wf = pick(find_workflows(args.app), args.workflow)
    filters: dict[str, Any] = {
        "status": None if args.status is None else int(status_value(wf, args.status)),
        "run_state": None if args.run_state is None else run_state_of(args.run_state),
        "foreign_id": args.foreign_id,
    }
    records = wf.store.list_runs(wf.name, **filters, limit=args.limit, offset=args.offset, order=args.order)
    total = wf.store.count_runs(wf.name, **filters)
    rows = [_row(wf, r) for r in records]
    if args.json:
        print(json.dumps({"total": total, "offset": args.offset, "limit": args.limit, "runs": rows}, indent=2))
        return 0
    cols = ["created_at", "foreign_id", "run_id", "run_state", "status", "version", "reason"]
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    print(_summary(wf.name, total, args.offset, len(rows)))
    return 0


def _summary(workflow: str, total: int, offset: int, shown: int) -> str:
    runs = f"{total} run{'s' if total != 1 else ''} of {workflow}"
    if shown == total:
        return f"({runs})"
    if shown == 0:
        return f"(none of {runs} from --offset {offset})"
    more = f"; --offset {offset + shown} for more" if offset + shown < total else ""
    return f"({offset + 1}-{offset + shown} of {runs}{more})"


def cmd_show(args: argparse.Namespace) -> int:
    wf, record = _find_run(find_workflows(args.app), args)
    detail = _row(wf, record)
    detail["object"] = json.loads(record.object)
    detail["trace_origin"] = record.meta.trace_origin
    detail["history"] = [
        {
            "version": h.version,
            "status": wf.definition.status_name(h.status),
            "run_state": h.run_state.name,
            "reason": h.reason,
            "at": h.created_at.isoformat(),
        }
        for h in wf.store.history(record.run_id)
    ]
    detail["errors"] = [
        {
            "status": wf.definition.status_name(e.status),
            "count": e.count,
            "error_type": e.last_error.error_type,
            "message": e.last_error.message,
            "at": e.last_error.occurred_at.isoformat(),
            "traceback": e.last_error.traceback,
        }
        for e in wf.store.errors(record.run_id)
    ]
    detail["hook_errors"] = [
        {
            "hook": e.hook,
            "message_id": e.message_id,
            "count": e.count,
            "error_type": e.last_error.error_type,
            "message": e.last_error.message,
            "at": e.last_error.occurred_at.isoformat(),
        }
        for e in wf.store.hook_errors(record.run_id)
    ]
    detail["pending_messages"] = [
        {"id": m.id, "queue": m.queue, "due_at": m.due_at.isoformat(), "attempts": m.attempts, "body": dict(m.body)}
        for m in wf.store.outbox(record.run_id)
    ]
    if args.json:
        print(json.dumps(detail, indent=2))
        return 0
    for key in [
        "workflow",
        "foreign_id",
        "run_id",
        "run_state",
        "status",
        "version",
        "reason",
        "created_at",
        "updated_at",
        "trace_origin",
    ]:
        print(f"{key + ':':<14}{detail[key]}")
    print(f"{'object:':<14}{json.dumps(detail['object'])}")
    print("history:")
    for h in detail["history"]:
        reason = f"  ({h['reason']})" if h["reason"] else ""
        print(f"  v{h['version']:<4} {h['at']}  {h['status']:<20} {h['run_state']}{reason}")
    if detail["errors"]:
        print("errors:")
        for e in detail["errors"]:
            print(f"  at {e['status']}: {e['count']} failed attempt(s); last at {e['at']}:")
            print(f"    {e['error_type']}: {e['message']}")
            for line in e["traceback"].rstrip().splitlines()[-6:]:
                print(f"      {line}")
    if detail["hook_errors"]:
        print("hook errors:")
        pending = {m["id"] for m in detail["pending_messages"]}
        for e in detail["hook_errors"]:
            state = "still failing, will retry" if e["message_id"] in pending else "succeeded since"
            print(f"  {e['hook']}: {e['count']} failed attempt(s), {state}; last at {e['at']}:")
            print(f"    {e['error_type']}: {e['message']}")
    if detail["pending_messages"]:
        print("pending messages:")
        for m in detail["pending_messages"]:
            print(f"  {m['queue']}  due {m['due_at']}  published {m['attempts']} time(s) by the relay")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    wf, record = _find_run(find_workflows(args.app), args)
    run_actions.apply(wf, args.action, record.run_id, getattr(args, "reason", ""))
    # The command's own change; a worker may have moved the run further by the time it is read again.
    changed_to = run_actions.TARGETS[args.action].name
    after = wf.store.lookup(record.run_id)
    if args.json:
        document = {**_row(wf, after), "previous_run_state": record.run_state.name, "changed_to": changed_to}
        print(json.dumps(document, indent=2))
        return 0
    now = "" if after.run_state.name == changed_to else f" (now {after.run_state.name})"
    print(f"{wf.name} run {record.run_id} ({record.foreign_id}): {record.run_state.name} -> {changed_to}{now}")
    return 0
