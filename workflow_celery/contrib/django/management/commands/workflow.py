"""``python manage.py workflow …``: every ``workflow-celery`` command on the project's workflows."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .....cli import main
from .....cli.common import without_options
from ... import settings as app_settings


class Command(BaseCommand):
    help = "The workflow-celery commands on the project's workflows: manage.py workflow runs list"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the arguments of workflow-celery, without -A")

    def run_from_argv(self, argv: list[str]) -> None:
        # Every argument goes to the workflow-celery command, which parses and documents them itself:
        # Django's own options (--settings, --traceback, --help) would clash with the command's.
        prog = f"{argv[0].rsplit('/', 1)[-1]} {argv[1]}"
        try:
            status = self._run(without_options(argv[2:], ("--settings", "--pythonpath")), prog)
        except CommandError as exc:
            # As every other error of the command: one line, exit status 1.
            sys.stderr.write(f"{prog}: error: {exc}\n")
            status = 1
        sys.exit(status)

    def handle(self, *args: Any, **options: Any) -> None:
        """``call_command("workflow", "runs", "list")``: raises ``CommandError`` on a non-zero status."""
        status = self._run([*args, *(options.get("arguments") or [])], "manage.py workflow")
        if status != 0:
            raise CommandError(f"workflow-celery exited with status {status}", returncode=status)

    @staticmethod
    def _run(arguments: list[str], prog: str) -> int:
        module = app_settings.app_module()
        if module is None:
            raise CommandError(f'set {app_settings.SETTING} = {{"APP": "<the module that builds your workflows>"}}')
        return main(arguments, app=module, prog=prog, loaded_by=f"of settings.{app_settings.SETTING}['APP']")
