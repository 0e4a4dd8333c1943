"""``celery purge -Q 'order-processing.*'``: the same patterns as the worker's, and every queue without ``-Q``.

Left alone, ``celery purge`` takes a pattern for a queue name (and purges
nothing, successfully), and without ``-Q`` it purges only the queues the app
declares itself, not its workflows'. The app gets a hidden preload option —
Celery's way of adding to every ``celery`` command — whose callback runs once
the command's own options are parsed and, for ``purge`` only, rewrites its
``-Q`` and ``-X`` the way a worker reads them. A pattern that matches nothing
is refused in one line, with exit status 1.

Purging a workflow queue deletes doorbells, not runs: every doorbell is still a
row in the database, and the relay rings it again after ``redeliver_after``.
"""

from __future__ import annotations

from typing import Any

import click
from celery import Celery

from ...core.errors import ConfigurationError
from .queues import as_list, expand_queue_patterns, known_queues

OPTION = "--workflow-celery-queue-patterns"


def install_purge_patterns(app: Celery) -> None:
    """Teach ``celery -A app purge`` the workers' queue patterns (once per app)."""
    preload: set[Any] = app.user_options["preload"]
    if any(OPTION in getattr(option, "opts", ()) for option in preload):
        return

    def expand(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if ctx.command.name != "purge":
            return value
        known = known_queues(app)
        try:
            requested = as_list(ctx.params.get("queues"))
            ctx.params["queues"] = expand_queue_patterns(requested, known) if requested else known
            excluded = as_list(ctx.params.get("exclude_queues"))
            ctx.params["exclude_queues"] = expand_queue_patterns(excluded, known)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
        return value

    # Processed after every option given on the command line (click handles those first), so -Q and -X are
    # in ctx.params by then; hidden and not passed on, so no command sees it.
    preload.add(click.Option([OPTION], is_flag=True, hidden=True, expose_value=False, callback=expand))
