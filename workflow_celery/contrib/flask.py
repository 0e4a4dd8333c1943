"""Flask extension: runs triggered in Flask-SQLAlchemy's session, and ``flask workflow …``.

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from workflow_celery.contrib.flask import WorkflowCelery

    db = SQLAlchemy()
    workflows = WorkflowCelery(db=db)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://localhost/shop"
        app.config["WORKFLOW_CELERY_APP"] = "shop.workflows"   # the module that builds the workflows
        db.init_app(app)
        workflows.init_app(app)
        return app

In a view, ``with workflows.joined():`` makes every write of the app's
workflows (``trigger``, ``callback``, ``pause`` …) part of ``db.session``'s
transaction: committed by ``db.session.commit()`` with the view's own rows,
published after that commit, gone with a rollback (``SQLStore.joined``).
Outside it, calls behave as anywhere else: each write commits on its own.

Configuration (``app.config``): ``WORKFLOW_CELERY_APP``, the module that
builds the workflows, as for ``celery -A`` (default: the environment
variable ``WORKFLOW_CELERY_APP``). The command ``flask workflow …`` takes
every argument of the ``workflow-celery`` command but ``-A``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy.orm import Session, scoped_session

from ..adapters.sql.store import SQLStore
from ..cli import APP_ENV, main
from ..cli.common import find_workflows
from ..core.errors import ConfigurationError
from ..core.workflow import Workflow

__all__ = ["WorkflowCelery"]

EXTENSION = "workflow_celery"
CONFIG_APP = "WORKFLOW_CELERY_APP"


class WorkflowCelery:
    """The Flask extension; ``db`` is the app's Flask-SQLAlchemy object, if it has one."""

    def __init__(self, app: Flask | None = None, *, db: Any = None) -> None:
        self.db = db
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: its config default and the ``flask workflow`` command."""
        app.config.setdefault(CONFIG_APP, os.environ.get(APP_ENV))
        app.extensions[EXTENSION] = self
        app.cli.add_command(workflow_command)

    def workflows(self) -> dict[str, Workflow[Any, Any]]:
        """The workflows the module named by ``WORKFLOW_CELERY_APP`` builds, by name (needs an app context).

        Raises ``ConfigurationError`` when the setting is missing, and
        ``cli.CliError`` when the module cannot be imported or builds none.
        """
        module = current_app.config.get(CONFIG_APP)
        if not module:
            raise ConfigurationError(f"set app.config[{CONFIG_APP!r}] to the module that builds your workflows")
        return find_workflows(str(module))

    @contextmanager
    def joined(self, session: Session | scoped_session[Session] | None = None) -> Iterator[None]:
        """Make the app's workflows write in ``session``'s transaction (default: ``db.session``).

        Every ``SQLStore`` of the app's workflows on the session's database
        joins it; see ``SQLStore.joined``. Raises ``ConfigurationError`` when
        no session is given and the extension has no ``db``, or when no
        workflow's store is on the session's database.
        """
        if session is None:
            if self.db is None:
                raise ConfigurationError("joined() needs a session: pass one, or WorkflowCelery(db=db)")
            session = self.db.session
        if isinstance(session, scoped_session):
            session = session()  # the session of this request or app context
        stores = {id(wf.store): wf.store for wf in self.workflows().values() if isinstance(wf.store, SQLStore)}
        with ExitStack() as stack:
            joined = 0
            for store in stores.values():
                try:
                    stack.enter_context(store.joined(session))
                except ConfigurationError:
                    continue  # a store on another database: its writes stay its own
                joined += 1
            if not joined:
                raise ConfigurationError(
                    "no workflow of the app stores its runs in the session's database (the one of "
                    "SQLALCHEMY_DATABASE_URI, or of the session passed): nothing can be written in its transaction"
                )
            yield


@click.command(
    name="workflow",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def workflow_command(arguments: tuple[str, ...]) -> None:
    """The workflow-celery commands on this app's workflows (``flask workflow --help``)."""
    module = current_app.config.get(CONFIG_APP)
    if not module:
        click.echo(
            f"flask workflow: error: set app.config[{CONFIG_APP!r}] (or ${APP_ENV}) to the module that builds "
            "your workflows",
            err=True,
        )
        sys.exit(1)
    sys.exit(main(list(arguments), app=str(module), prog="flask workflow", loaded_by=f"of {CONFIG_APP} = {module!r}"))
