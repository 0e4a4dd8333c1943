"""``workflow-celery``: schema migrations and operator commands on runs.

workflow-celery db upgrade --url postgresql+psycopg://localhost/shop
workflow-celery -A examples.orders runs list --run-state paused
workflow-celery -A examples.orders runs show RUN_ID
workflow-celery -A examples.orders runs pause RUN_ID --reason "investigating"
workflow-celery -A examples.orders runs resume|cancel|delete-data RUN_ID
workflow-celery -A examples.orders queues
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .core.errors import RecordNotFound, WorkflowError
from .core.record import Record
from .core.run_state import RunState
from .core.workflow import Workflow

APP_ENV = "WORKFLOW_CELERY_APP"
URL_ENV = "WORKFLOW_CELERY_DATABASE_URL"


class CliError(Exception):
    pass


def find_workflows(module_path: str) -> dict[str, Workflow[Any, Any]]:
    """Workflows built by a module: on its Celery apps, or as module attributes."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like ``celery -A``: modules of the current project
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise CliError(f"cannot import {module_path!r}: {exc}") from exc
    found: dict[str, Workflow[Any, Any]] = {}
    for value in vars(module).values():
        if isinstance(value, Workflow):
            found[value.name] = value
        registry = getattr(value, "_workflow_celery_workflows", None)
        if isinstance(registry, dict):
            found.update(registry)
    if not found:
        raise CliError(f"module {module_path!r} builds no workflow")
    return found


def _pick(workflows: dict[str, Workflow[Any, Any]], name: str | None) -> Workflow[Any, Any]:
    if name is not None:
        try:
            return workflows[name]
        except KeyError:
            raise CliError(f"no workflow named {name!r}; known: {', '.join(sorted(workflows))}") from None
    if len(workflows) == 1:
        return next(iter(workflows.values()))
    raise CliError(f"several workflows ({', '.join(sorted(workflows))}): choose one with --workflow")


def _for_run(workflows: dict[str, Workflow[Any, Any]], run_id: str) -> tuple[Workflow[Any, Any], Record]:
    stores = {id(wf.store): wf.store for wf in workflows.values()}
    for store in stores.values():
        try:
            record = store.lookup(run_id)
        except RecordNotFound:
            continue
        if record.workflow_name in workflows:
            return workflows[record.workflow_name], record
        raise CliError(f"run {run_id} belongs to workflow {record.workflow_name!r}, which this app does not build")
    raise CliError(f"run {run_id!r} not found (workflows: {', '.join(sorted(workflows))})")


def _status_value(wf: Workflow[Any, Any], name: str) -> Any:
    try:
        return wf.definition.status_type[name.upper()]
    except KeyError:
        names = ", ".join(s.name for s in wf.definition.status_type if int(s) in wf.definition.graph)
        raise CliError(f"unknown status {name!r} for workflow {wf.name}; statuses: {names}") from None


def _run_state(name: str) -> RunState:
    try:
        return RunState[name.upper().replace("-", "_")]
    except KeyError:
        raise CliError(
            f"unknown run state {name!r}; run states: {', '.join(s.name.lower() for s in RunState)}"
        ) from None


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
    wf = _pick(find_workflows(args.app), args.workflow)
    records = wf.store.list_runs(
        wf.name,
        status=None if args.status is None else int(_status_value(wf, args.status)),
        run_state=None if args.run_state is None else _run_state(args.run_state),
        foreign_id=args.foreign_id,
        limit=args.limit,
        offset=args.offset,
        order=args.order,
    )
    rows = [_row(wf, r) for r in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["created_at", "foreign_id", "run_id", "run_state", "status", "version", "reason"]
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    print(f"({len(rows)} run{'s' if len(rows) != 1 else ''} of {wf.name})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    wf, record = _for_run(find_workflows(args.app), args.run_id)
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
    wf, record = _for_run(find_workflows(args.app), args.run_id)
    action = args.action
    if action == "pause":
        wf.pause(record.run_id, args.reason)
    elif action == "resume":
        wf.resume(record.run_id)
    elif action == "cancel":
        wf.cancel(record.run_id, args.reason)
    else:
        wf.delete_data(record.run_id, args.reason)
    after = wf.store.lookup(record.run_id)
    print(f"{wf.name} run {record.run_id} ({record.foreign_id}): {record.run_state.name} -> {after.run_state.name}")
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    for wf in find_workflows(args.app).values():
        for q in wf.queues():
            print(q)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from .sql.migrate import current, upgrade

    url = args.url or os.environ.get(URL_ENV)
    if not url:
        raise CliError(f"give --url or set {URL_ENV}")
    if args.db_command == "upgrade":
        upgrade(url)
        print(f"schema is at revision {current(url)}")
    else:
        print(current(url) or "(no schema)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workflow-celery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-A",
        "--app",
        default=os.environ.get(APP_ENV),
        help=f"module that builds the workflows, as for celery -A (default ${APP_ENV})",
    )
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="create or upgrade the schema")
    db.add_argument("db_command", choices=["upgrade", "current"])
    db.add_argument("--url", help=f"SQLAlchemy URL (default ${URL_ENV})")
    db.set_defaults(func=cmd_db, needs_app=False)

    q = sub.add_parser("queues", help="list the queues the app's workflows declare")
    q.set_defaults(func=cmd_queues, needs_app=True)

    runs = sub.add_parser("runs", help="list, show and control runs")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    ls = rsub.add_parser("list", help="list runs, newest first")
    ls.add_argument("--workflow")
    ls.add_argument("--status")
    ls.add_argument("--run-state")
    ls.add_argument("--foreign-id")
    ls.add_argument("--limit", type=int, default=25)
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--order", choices=["asc", "desc"], default="desc")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list, needs_app=True)
    show = rsub.add_parser("show", help="one run with its history, errors and pending messages")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show, needs_app=True)
    for action in ["pause", "resume", "cancel", "delete-data"]:
        c = rsub.add_parser(action, help=f"{action} a run")
        c.add_argument("run_id")
        if action != "resume":
            c.add_argument("--reason", default="")
        c.set_defaults(func=cmd_control, needs_app=True, action=action)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.needs_app and not args.app:
        p.error(f"-A/--app is required (or set ${APP_ENV})")
    try:
        return int(args.func(args))
    except (CliError, WorkflowError) as exc:
        print(f"workflow-celery: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
