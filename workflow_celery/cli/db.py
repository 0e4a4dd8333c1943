"""``workflow-celery db`` (the schema: upgrade, current revision) and ``workflow-celery queues``."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from ..core.workflow import Workflow
from .common import URL_ENV, CliError, describe, find_workflows

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def add_commands(sub: Any) -> None:
    """Add ``db upgrade|current`` and ``queues`` to the command's sub-parsers."""
    db = sub.add_parser("db", help="create or upgrade the schema of the app's store (or of --url)")
    db.add_argument("db_command", choices=["upgrade", "current"])
    db.add_argument("--url", help=f"SQLAlchemy URL (default: the -A app's store, else ${URL_ENV})")
    db.add_argument(
        "--sql", action="store_true", help="upgrade: print the SQL for a DBA to review and run, change nothing"
    )
    db.add_argument("--json", action="store_true", help="as JSON: each database's URL, its revision and the newest one")
    db.set_defaults(func=cmd_db, needs_app=False)
    q = sub.add_parser("queues", help="list the queues the app's workflows declare")
    q.add_argument("--json", action="store_true", help="as JSON: each workflow's queues")
    q.set_defaults(func=cmd_queues, needs_app=True)


def cmd_queues(args: argparse.Namespace) -> int:
    workflows = find_workflows(args.app)
    if args.json:
        print(json.dumps({name: wf.queues() for name, wf in sorted(workflows.items())}, indent=2))
        return 0
    for wf in workflows.values():
        for q in wf.queues():
            print(q)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """Migrate ``--url``; else the stores of the ``-A`` app's workflows; else ``$WORKFLOW_CELERY_DATABASE_URL``."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from ..adapters.sql.migrate import current, head, upgrade, upgrade_script

    targets: list[Engine | str] = []
    if args.url:
        targets = [args.url]
    elif args.app:
        targets = [*_app_engines(find_workflows(args.app))]
    elif os.environ.get(URL_ENV):
        targets = [os.environ[URL_ENV]]
    else:
        raise CliError(f"give -A APP (its workflows' store), --url, or set {URL_ENV}")
    if args.json and args.sql:
        raise CliError("--json and --sql cannot go together: --sql prints SQL")
    databases: list[dict[str, Any]] = []
    newest = head()
    for target in targets:
        try:
            shown = make_url(target if isinstance(target, str) else target.url).render_as_string(hide_password=True)
        except ArgumentError:
            raise CliError(f"not a database URL: {target!r} (e.g. postgresql+psycopg://host/dbname)") from None
        # Several stores: say which database each line is about.
        where = f"{shown}: " if len(targets) > 1 else ""
        if args.sql:
            if args.db_command != "upgrade":
                raise CliError("--sql goes with db upgrade")
            # From the first revision, as for an empty database: nothing is read from the server.
            upgrade_script(make_url(target if isinstance(target, str) else target.url))
            continue
        try:
            if args.db_command == "upgrade":
                upgrade(target)
            revision = current(target)
        except DBAPIError as exc:
            raise CliError(f"{describe(exc)} ({shown})") from exc
        databases.append({"url": shown, "revision": revision, "head": newest, "at_head": revision == newest})
        if args.json:
            continue
        if args.db_command == "upgrade":
            print(f"{where}schema is at revision {revision}")
        else:
            print(f"{where}{revision or '(no schema)'}")
    if args.json:
        print(json.dumps({"databases": databases}, indent=2))
    return 0


def _app_engines(workflows: dict[str, Workflow[Any, Any]]) -> list[Engine]:
    """The engine of each database the workflows' SQL stores use, once per database, in workflow-name order."""
    from ..adapters.sql import SQLStore

    # Keyed by URL: two stores built from one URL are one database, migrated once.
    engines: dict[str, Engine] = {}
    for _, wf in sorted(workflows.items()):
        if isinstance(wf.store, SQLStore):
            engines.setdefault(wf.store.engine.url.render_as_string(hide_password=False), wf.store.engine)
    if not engines:
        names = ", ".join(sorted(workflows))
        raise CliError(f"the app's workflows ({names}) keep their runs in no SQL store: give --url")
    return list(engines.values())
