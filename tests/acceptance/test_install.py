"""Acceptance: one database URL, in the app, for its workers and the CLI's db commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workflow_celery.sql import migrate

FLOWS = """
import enum

from celery import Celery
from workflow_celery import Builder, MemoryStore, SQLStore

class Stage(enum.IntEnum):
    UNKNOWN = 0
    START = 1
    END = 2

def finish(run):
    return Stage.END

def flow(name):
    b = Builder(name, dict, Stage)
    b.add_step(Stage.START, finish, Stage.END)
    return b

app = Celery("app")
"""


def workflow_celery(*args: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed command, run from ``folder`` (where the ``-A`` modules are)."""
    command = str(Path(sys.executable).with_name("workflow-celery"))
    return subprocess.run(
        [command, *args],
        cwd=folder,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_CELERY_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_commands_use_the_store_the_app_builds(tmp_path: Path, pg_database: str) -> None:
    (tmp_path / "shopapp.py").write_text(FLOWS + f"flow('shop').build(app, SQLStore({pg_database!r}))\n")
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    env = {"WORKFLOW_CELERY_DATABASE_URL": elsewhere}  # the app's store wins over the environment
    before = workflow_celery("-A", "shopapp", "db", "current", folder=tmp_path, env=env)
    assert (before.returncode, before.stdout) == (0, "(no schema)\n"), before.stderr
    up = workflow_celery("-A", "shopapp", "db", "upgrade", folder=tmp_path, env=env)
    assert (up.returncode, up.stdout) == (0, f"schema is at revision {migrate.head()}\n"), up.stderr
    assert migrate.current(pg_database) == migrate.head()
    assert not (tmp_path / "elsewhere.db").exists()
    after = workflow_celery("-A", "shopapp", "db", "current", folder=tmp_path, env=env)
    assert after.stdout == f"{migrate.head()}\n"
    # --url still names a database of its own.
    other = workflow_celery("-A", "shopapp", "db", "upgrade", "--url", elsewhere, folder=tmp_path, env=env)
    assert other.returncode == 0 and migrate.current(elsewhere) == migrate.head()


def test_db_upgrade_migrates_every_sql_store_of_the_app(tmp_path: Path) -> None:
    first, second = (f"sqlite:///{tmp_path / name}.db" for name in ("first", "second"))
    (tmp_path / "twostores.py").write_text(
        FLOWS
        + f"flow('first').build(app, SQLStore({first!r}))\n"
        + f"flow('second').build(app, SQLStore({second!r}))\n"
        + "flow('in-memory').build(app, MemoryStore())\n"
    )
    up = workflow_celery("-A", "twostores", "db", "upgrade", folder=tmp_path, env={})
    assert up.returncode == 0, up.stderr
    head = migrate.head()
    assert up.stdout.splitlines() == [
        f"{first}: schema is at revision {head}",
        f"{second}: schema is at revision {head}",
    ]
    assert migrate.current(first) == migrate.current(second) == head

    (tmp_path / "memoryonly.py").write_text(FLOWS + "flow('kept-in-memory').build(app, MemoryStore())\n")
    refused = workflow_celery("-A", "memoryonly", "db", "upgrade", folder=tmp_path, env={})
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "workflow-celery: error: the app's workflows (kept-in-memory) keep their runs in no SQL store: give --url\n"
    )
