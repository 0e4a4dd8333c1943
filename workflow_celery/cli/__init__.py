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
workflow-celery -A examples.orders schedules list|slots FOREIGN_ID|remove FOREIGN_ID
workflow-celery -A examples.orders metrics --port 9187             # or --once
workflow-celery -A examples.orders runs bulk resume --run-state paused --dry-run
workflow-celery -A examples.orders status | graph [--out DIR]
workflow-celery -A examples.orders ui --port 8089                  # the web UI, behind a token

Errors are one line on stderr (exit status 1; 2 for usage errors);
--traceback, or WORKFLOW_CELERY_TRACEBACK=1, shows the full trace instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from celery import Celery

from . import db, dead_letters, hooks, metrics, overview, runs, schedules, ui
from .common import APP_ENV, TRACEBACK_ENV, URL_ENV, CliError, Parser, describe, find_workflows

__all__ = ["APP_ENV", "TRACEBACK_ENV", "URL_ENV", "CliError", "describe", "find_workflows", "main", "parser"]


EMBEDDED = """The workflow-celery commands on the workflows of the app {loaded}:

  {prog} runs list --run-state paused
  {prog} runs show RUN_ID            # or a unique prefix of it, or --foreign-id ID
  {prog} runs pause RUN_ID --reason "investigating"
  {prog} runs resume|cancel|delete-data RUN_ID
  {prog} db upgrade
  {prog} queues
  {prog} dead-letters list|show ID|discard ID

Errors are one line on stderr (exit status 1; 2 for usage errors);
--traceback, or WORKFLOW_CELERY_TRACEBACK=1, shows the full trace instead.
"""


def parser(prog: str = "workflow-celery", *, loaded_by: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; ``loaded_by`` names the framework that loaded the app (then there is no ``-A``)."""
    description = __doc__ if loaded_by is None else EMBEDDED.format(prog=prog, loaded=loaded_by)
    p = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if loaded_by is None:
        p.add_argument(
            "-A",
            "--app",
            default=os.environ.get(APP_ENV),
            help=f"module that builds the workflows, as for celery -A (default ${APP_ENV})",
        )
    p.add_argument(
        "--traceback", action="store_true", help=f"show the full trace of an error (or set {TRACEBACK_ENV}=1)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db.add_commands(sub)
    runs.add_commands(sub)
    dead_letters.add_commands(sub)
    hooks.add_commands(sub)
    schedules.add_commands(sub)
    metrics.add_commands(sub)
    overview.add_commands(sub)
    ui.add_commands(sub)
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    app: str | Celery | None = None,
    prog: str | None = None,
    loaded_by: str | None = None,
) -> int:
    """Run the command; return its exit status (0, 1 on an error, 2 on a usage error).

    ``app`` takes the place of ``-A``: a Celery app already loaded (``celery
    -A proj workflow …``), or a module path from a framework's settings
    (``flask workflow …``); ``loaded_by`` then says where it came from, for
    the help, and ``prog`` is the command as the user types it.
    """
    embedded = None if app is None else (loaded_by or "given by the caller")
    p = parser(prog or "workflow-celery", loaded_by=embedded)
    args = p.parse_args(argv)
    if app is not None:
        args.app = app
    if args.needs_app and not args.app:
        p.error(f"-A/--app is required (or set ${APP_ENV})")
    full_trace = args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader stopped early (`runs list | head`): nothing went wrong, and whether the pipe broke
        # depends on timing, so the status must not (a script under `set -o pipefail` would fail at random).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if full_trace:
            raise
        print(f"{p.prog}: error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if full_trace:
            raise
        print(f"{p.prog}: interrupted", file=sys.stderr)
        return 130
