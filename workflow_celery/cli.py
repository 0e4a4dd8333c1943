"""``workflow-celery``: schema migrations and operator commands on runs.

workflow-celery -A shop db upgrade              # the database of the app's store
workflow-celery db upgrade --url postgresql+psycopg://localhost/shop
workflow-celery -A examples.orders runs list --run-state paused
workflow-celery -A examples.orders runs show RUN_ID            # or a unique prefix of it
workflow-celery -A examples.orders runs show --foreign-id order-42
workflow-celery -A examples.orders runs pause RUN_ID --reason "investigating"
workflow-celery -A examples.orders runs resume|cancel|delete-data RUN_ID
workflow-celery -A examples.orders queues
workflow-celery -A examples.orders dead-letters list|show ID|discard ID

Errors are one line on stderr (exit status 1; 2 for usage errors);
--traceback, or WORKFLOW_CELERY_TRACEBACK=1, shows the full trace instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .cli_hooks import add_hook_commands
from .core.errors import RecordNotFound, WorkflowError
from .core.record import Record
from .core.run_state import RunState
from .core.workflow import Workflow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

APP_ENV = "WORKFLOW_CELERY_APP"
URL_ENV = "WORKFLOW_CELERY_DATABASE_URL"
TRACEBACK_ENV = "WORKFLOW_CELERY_TRACEBACK"


class CliError(Exception):
    pass


def describe(exc: BaseException) -> str:
    """Any error as one line: the driver's own words for a database error, never the SQL statement."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # psycopg quotes the statement from a "LINE n:" line on; what comes before is the error.
        lines = str(exc.orig).splitlines()
        cut = next((i for i, line in enumerate(lines) if line.startswith("LINE ")), len(lines))
        text = "database error: " + "\n".join(lines[:cut])
    elif isinstance(exc, (CliError, WorkflowError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (--traceback shows where)"
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def find_workflows(module_path: str) -> dict[str, Workflow[Any, Any]]:
    """Workflows built by a module: on its Celery apps, or as module attributes."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like ``celery -A``: modules of the current project
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise CliError(f"cannot import {module_path!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed: a bad URL, a database down, a broken workflow
        raise CliError(f"cannot import {module_path!r}: {describe(exc)}") from exc
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


def _find_run(workflows: dict[str, Workflow[Any, Any]], args: argparse.Namespace) -> tuple[Workflow[Any, Any], Record]:
    """The run named by a run id, a unique prefix of one, or ``--foreign-id`` (its latest run)."""
    if args.workflow is not None:
        workflows = {args.workflow: _pick(workflows, args.workflow)}
    if args.foreign_id is not None:
        return _latest_run(workflows, args.foreign_id)
    return _for_run(workflows, args.run_id)


def _for_run(workflows: dict[str, Workflow[Any, Any]], run_id: str) -> tuple[Workflow[Any, Any], Record]:
    if not run_id:
        raise CliError("give a run id (or a unique prefix of one) or --foreign-id")
    stores = {id(wf.store): wf.store for wf in workflows.values()}
    names = sorted(workflows)
    one = names[0] if len(names) == 1 else None
    matches: list[Record] = []
    for store in stores.values():
        try:
            matches = [store.lookup(run_id)]
            break
        except RecordNotFound:
            matches += store.list_runs(one, run_id_prefix=run_id, limit=2)
    if not matches:
        raise CliError(f"run {run_id!r} not found (workflows: {', '.join(names)})")
    if len(matches) > 1:
        count = sum(store.count_runs(one, run_id_prefix=run_id) for store in stores.values())
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
    filters: dict[str, Any] = {
        "status": None if args.status is None else int(_status_value(wf, args.status)),
        "run_state": None if args.run_state is None else _run_state(args.run_state),
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
    """Migrate ``--url``; else the stores of the ``-A`` app's workflows; else ``$WORKFLOW_CELERY_DATABASE_URL``."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from .adapters.sql.migrate import current, upgrade

    targets: list[Engine | str] = []
    if args.url:
        targets = [args.url]
    elif args.app:
        targets = [*_app_engines(find_workflows(args.app))]
    elif os.environ.get(URL_ENV):
        targets = [os.environ[URL_ENV]]
    else:
        raise CliError(f"give -A APP (its workflows' store), --url, or set {URL_ENV}")
    for target in targets:
        try:
            shown = make_url(target if isinstance(target, str) else target.url).render_as_string(hide_password=True)
        except ArgumentError:
            raise CliError(f"not a database URL: {target!r} (e.g. postgresql+psycopg://host/dbname)") from None
        # Several stores: say which database each line is about.
        where = f"{shown}: " if len(targets) > 1 else ""
        try:
            if args.db_command == "upgrade":
                upgrade(target)
                print(f"{where}schema is at revision {current(target)}")
            else:
                print(f"{where}{current(target) or '(no schema)'}")
        except DBAPIError as exc:
            raise CliError(f"{describe(exc)} ({shown})") from exc
    return 0


def _app_engines(workflows: dict[str, Workflow[Any, Any]]) -> list[Engine]:
    """The engine of each SQL store the workflows use, once each, in workflow-name order."""
    from .adapters.sql import SQLStore

    engines: dict[int, Engine] = {}
    for _, wf in sorted(workflows.items()):
        if isinstance(wf.store, SQLStore):
            engines.setdefault(id(wf.store.engine), wf.store.engine)
    if not engines:
        names = ", ".join(sorted(workflows))
        raise CliError(f"the app's workflows ({names}) keep their runs in no SQL store: give --url")
    return list(engines.values())


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    return _integer(text, 1)


def _not_negative(text: str) -> int:
    return _integer(text, 0)


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workflow-celery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "-A",
        "--app",
        default=os.environ.get(APP_ENV),
        help=f"module that builds the workflows, as for celery -A (default ${APP_ENV})",
    )
    p.add_argument(
        "--traceback", action="store_true", help=f"show the full trace of an error (or set {TRACEBACK_ENV}=1)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="create or upgrade the schema of the app's store (or of --url)")
    db.add_argument("db_command", choices=["upgrade", "current"])
    db.add_argument("--url", help=f"SQLAlchemy URL (default: the -A app's store, else ${URL_ENV})")
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
    ls.add_argument("--limit", type=_positive, default=25, help="runs per page")
    ls.add_argument("--offset", type=_not_negative, default=0, help="runs to skip")
    ls.add_argument("--order", choices=["asc", "desc"], default="desc")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list, needs_app=True)
    show = rsub.add_parser("show", help="one run with its history, errors and pending messages")
    _add_run_selector(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show, needs_app=True)
    for action in ["pause", "resume", "cancel", "delete-data"]:
        c = rsub.add_parser(action, help=f"{action} a run")
        _add_run_selector(c)
        if action != "resume":
            c.add_argument("--reason", default="")
        c.set_defaults(func=cmd_control, needs_app=True, action=action)

    from .cli_dead_letters import add_commands  # it imports this module

    add_commands(sub, positive=_positive, not_negative=_not_negative)
    add_hook_commands(sub)
    return p


def _add_run_selector(command: argparse.ArgumentParser) -> None:
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", help="a run id, or enough of its start to name one run")
    which.add_argument("--foreign-id", help="the latest run of this foreign id")
    command.add_argument("--workflow", help="look only at this workflow's runs")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (0, 1 on an error, 2 on a usage error)."""
    p = parser()
    args = p.parse_args(argv)
    if args.needs_app and not args.app:
        p.error(f"-A/--app is required (or set ${APP_ENV})")
    full_trace = args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader stopped early (`runs list | head`): nothing went wrong that needs saying.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if full_trace:
            raise
        print(f"workflow-celery: error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if full_trace:
            raise
        print("workflow-celery: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
