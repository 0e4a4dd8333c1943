"""What every ``workflow-celery`` command shares: finding the app's workflows, one-line errors, argument types."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from celery import Celery

from ..core.errors import WorkflowError
from ..core.run_state import RunState
from ..core.workflow import Workflow

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


def find_workflows(module_path: str | Celery) -> dict[str, Workflow[Any, Any]]:
    """Workflows built by a module (on its Celery apps, or as module attributes), or on a loaded Celery app.

    A Celery app (``celery -A proj workflow …``, loaded by Celery itself)
    first imports its task modules as a worker does (``include``, ``imports``
    and autodiscovered ones, with Django set up by Celery's own fixup), so
    workflows built in any of them are found.
    """
    if isinstance(module_path, Celery):
        return _built_on(module_path)
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
        if any(isinstance(value, Celery) for value in vars(module).values()):
            # A Django project's package, or any app whose workflows live in task modules it autodiscovers.
            raise CliError(
                f"module {module_path!r} builds no workflow, but has a Celery app: `celery -A {module_path} "
                "workflow …` imports its task modules first, as a worker does"
            )
        raise CliError(f"module {module_path!r} builds no workflow")
    return found


def app_name(app: str | Celery) -> str:
    """How the app was named on the command line: the module path, or the Celery app's main name."""
    return app if isinstance(app, str) else f"the Celery app {app.main!r}"


def _built_on(app: Celery) -> dict[str, Workflow[Any, Any]]:
    from ..adapters.celery.registry import registry

    try:
        app.loader.import_default_modules()
    except Exception as exc:  # a task module's own code failed
        raise CliError(f"cannot import the task modules of the Celery app {app.main!r}: {describe(exc)}") from exc
    found = dict(registry(app))
    if not found:
        raise CliError(f"no workflow is built on the Celery app {app.main!r}, nor in its task modules")
    return found


def pick(workflows: dict[str, Workflow[Any, Any]], name: str | None) -> Workflow[Any, Any]:
    if name is not None:
        try:
            return workflows[name]
        except KeyError:
            raise CliError(f"no workflow named {name!r}; known: {', '.join(sorted(workflows))}") from None
    if len(workflows) == 1:
        return next(iter(workflows.values()))
    raise CliError(f"several workflows ({', '.join(sorted(workflows))}): choose one with --workflow")


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


MAX_COUNT = 2**31 - 1
"""The largest count, page size, offset or port an option takes (databases count in 64 bits, ports in 16)."""


def positive(text: str) -> int:
    return _integer(text, 1)


def not_negative(text: str) -> int:
    return _integer(text, 0)


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT:,}, got {value:,}")
    return value


def without_options(arguments: Sequence[str], names: Sequence[str]) -> list[str]:
    """``arguments`` without the options ``names`` and their values (``--opt value`` or ``--opt=value``)."""
    kept: list[str] = []
    skip = False
    for a in arguments:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not any(a.startswith(f"{name}=") for name in names if name.startswith("--")):
            kept.append(a)
    return kept


def status_value(wf: Workflow[Any, Any], name: str) -> Any:
    """The status named ``name`` (any case) of ``wf``; ``CliError`` listing the statuses otherwise."""
    try:
        return wf.definition.status_type[name.upper()]
    except KeyError:
        names = ", ".join(s.name for s in wf.definition.status_type if int(s) in wf.definition.graph)
        raise CliError(f"unknown status {name!r} for workflow {wf.name}; statuses: {names}") from None


def run_state_of(name: str) -> RunState:
    """The run state named ``name`` (any case, ``-`` for ``_``); ``CliError`` listing them otherwise."""
    try:
        return RunState[name.upper().replace("-", "_")]
    except KeyError:
        raise CliError(
            f"unknown run state {name!r}; run states: {', '.join(s.name.lower() for s in RunState)}"
        ) from None
