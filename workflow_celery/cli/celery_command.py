"""``celery -A proj workflow …``: every ``workflow-celery`` command as a Celery subcommand.

Registered under Celery's ``celery.commands`` entry point, so Celery loads the
app as it does for ``celery worker``: ``-A``, ``--config``, the broker
options, and in the standard Django layout ``proj/celery.py`` with Django set
up by Celery's own fixup. The arguments after ``workflow`` are those of the
``workflow-celery`` command without its ``-A``::

    celery -A proj workflow runs list --run-state paused
    celery -A proj workflow runs pause RUN_ID --reason "investigating"
    celery -A proj workflow db upgrade
"""

from __future__ import annotations

import click

from . import main
from .common import without_options


@click.command(
    name="workflow",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def workflow(ctx: click.Context, arguments: tuple[str, ...]) -> None:
    """The workflow-celery commands on this app's workflows (``celery -A proj workflow --help``)."""
    if any(a in ("-A", "--app") or a.startswith("--app=") for a in arguments):
        raise click.UsageError(
            f"-A goes before workflow: celery -A proj workflow {' '.join(without_options(arguments, ('-A', '--app')))}"
        )
    if not ctx.find_root().params.get("app"):
        wanted = " ".join(arguments) or "--help"
        raise click.UsageError(f"name the app that builds your workflows: celery -A proj workflow {wanted}")
    app = ctx.obj.app
    prog = f"{ctx.find_root().info_name or 'celery'} -A {ctx.find_root().params['app']} workflow"
    ctx.exit(main(list(arguments), app=app, prog=prog, loaded_by=f"{app.main!r}, loaded by celery -A"))
