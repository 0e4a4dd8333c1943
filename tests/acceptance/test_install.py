"""Acceptance: the package installed like a library, and one database URL for workers and the CLI.

The first test builds a wheel from a copy of the sources, installs it in a new
virtualenv outside this repository with the extras the README names, and runs
the README's quickstart as written from an empty folder: its module, its
commands, its trigger, on RabbitMQ and on Redis.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.acceptance.conftest import ROOT, Worker, rabbitmq_vhost, redis_database
from workflow_celery.adapters.sql import migrate

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
QUICKSTART_DATABASE = "postgresql+psycopg://localhost/shop"


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block under the README's ``## heading``, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return FENCE.findall(text[start : end if end != -1 else len(text)])


def install_lines() -> dict[str, str]:
    """The README's ``pip install`` lines by the extras they name: ``{"": ..., "redis": ...}``."""
    [bash] = [code for lang, code in readme_blocks("Install") if lang == "bash"]
    found: dict[str, str] = {}
    for line in bash.splitlines():
        command = shlex.split(line, comments=True)
        if command[:2] == ["pip", "install"]:
            [spec] = command[2:]
            name, _, extras = spec.partition("[")
            assert name == "workflow-celery", line
            found[extras.rstrip("]")] = line
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without the test run's own Python and workflow settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WORKFLOW_CELERY_", "CELERY_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    return {**env, **extra}


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(python: Path, work: Path) -> Path:
    """A wheel built by ``python``'s pip from a copy of the sources (the checkout stays as it is)."""
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "workflow_celery", source / "workflow_celery", ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    run([str(python), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], work, clean_env())
    [wheel] = dist.glob("workflow_celery-*.whl")
    return wheel


def run_quickstart(folder: Path, venv: Path, broker_url: str, database_url: str, log: Path) -> str:
    """The quickstart's commands and trigger in ``folder``, with the venv's commands first on PATH; what it printed."""
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", CELERY_BROKER_URL=broker_url)
    blocks = readme_blocks("Quickstart")
    commands = [shlex.split(line) for lang, code in blocks if lang == "bash" for line in code.splitlines()]
    assert [c[:2] for c in commands] == [["workflow-celery", "-A"], ["celery", "-A"]], commands
    upgrade, start = commands
    print(run(upgrade, folder, env).strip())
    assert migrate.current(database_url) == migrate.head()  # the app's own store, no URL given
    with log.open("wb") as fh:
        proc = subprocess.Popen(start, cwd=folder, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(proc, log)
    try:
        worker.wait_ready()
        return run([str(venv / "bin" / "python"), "trigger.py"], folder, env, timeout=60)
    finally:
        worker.stop()


def test_the_readme_quickstart_runs_from_an_empty_folder_in_a_fresh_virtualenv(
    tmp_path: Path, pg_database: str
) -> None:
    started = time.monotonic()
    venv, folder = tmp_path / "venv", tmp_path / "empty"
    folder.mkdir()
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, clean_env())
    python = venv / "bin" / "python"
    wheel = build_wheel(python, tmp_path)
    built = time.monotonic()
    lines = install_lines()
    assert set(lines) == {"", "redis", "flower", "ui"}, lines
    assert "RabbitMQ" in lines[""] and "Redis" in lines["redis"], lines

    [shop, trigger] = [code for lang, code in readme_blocks("Quickstart") if lang == "python"]
    assert shop.count(QUICKSTART_DATABASE) == 1
    (folder / "shop.py").write_text(shop.replace(QUICKSTART_DATABASE, pg_database))  # the reader's own database
    (folder / "trigger.py").write_text(trigger)

    # RabbitMQ needs nothing but the package: py-amqp comes with Celery.
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path, clean_env())
    installed = time.monotonic()
    where = run([str(python), "-c", "import workflow_celery; print(workflow_celery.__file__)"], folder, clean_env())
    assert Path(where.strip()).is_relative_to(venv), where
    with rabbitmq_vhost() as url:
        out = run_quickstart(folder, venv, url, pg_database, tmp_path / "worker-rabbitmq.log")
    assert re.fullmatch(r"ch_[0-9a-f-]{36}\n", out), out
    on_rabbitmq = time.monotonic()

    # Redis needs the extra the README names for it.
    run([str(python), "-m", "pip", "install", "-q", f"{wheel}[redis]"], tmp_path, clean_env())
    with redis_database() as url:
        out = run_quickstart(folder, venv, url, pg_database, tmp_path / "worker-redis.log")
    assert re.fullmatch(r"ch_[0-9a-f-]{36}\n", out), out
    with_redis = time.monotonic()

    # The web UI's extra, and its templates in the wheel.
    run([str(python), "-m", "pip", "install", "-q", f"{wheel}[ui]"], tmp_path, clean_env())
    templates = run(
        [str(python), "-c", "from workflow_celery.ui.pages import RunsUI; "
         "print(sorted(RunsUI([]).env.list_templates()))"],
        folder, clean_env(),
    )  # fmt: skip
    assert "'runs.html'" in templates and "'run.html'" in templates and "'graph.html'" in templates, templates
    print(
        f"ui extra {time.monotonic() - with_redis:.1f}s; "
        f"venv and wheel {built - started:.1f}s, install {installed - built:.1f}s, "
        f"quickstart on RabbitMQ {on_rabbitmq - installed:.1f}s, redis extra and quickstart on Redis "
        f"{time.monotonic() - on_rabbitmq:.1f}s, in all {time.monotonic() - started:.1f}s"
    )


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
