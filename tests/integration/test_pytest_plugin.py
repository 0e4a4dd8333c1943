"""The pytest plugin, as a user's suite meets it: a project of its own, run by ``python -m pytest``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_WORKFLOWS = """
import enum, os
from dataclasses import dataclass

from celery import Celery
from workflow_celery import Builder, Run, SQLStore


class Status(enum.IntEnum):
    UNKNOWN = 0
    CREATED = 1
    DONE = 2


@dataclass
class Job:
    name: str = ""
    done_by: str = ""


def finish(run: Run[Job, Status]) -> Status:
    run.object.done_by = "worker"
    return Status.DONE


def builder() -> Builder[Job, Status]:
    b = Builder("plugin-jobs", Job, Status)
    b.add_step(Status.CREATED, finish, Status.DONE)
    return b


app = Celery("plugin-jobs", broker=os.environ["CELERY_BROKER_URL"])
app.config_from_object("workflow_celery.celeryconfig")
store = SQLStore(os.environ["WORKFLOW_CELERY_DATABASE_URL"])
store.create_schema()
wf = builder().build(app, store)
"""

PROJECT_TESTS = """
import os
from datetime import timedelta

from jobs import Job, Status, builder, wf
from workflow_celery.testing import require


def test_in_process_with_a_fake_clock(workflow_in_process, workflow_clock):
    start = workflow_clock.now()
    local, broker = workflow_in_process(builder(), clock=workflow_clock)
    local.trigger("job-1", initial_value=Job(name="a"))
    require(local, "job-1", Status.DONE, Job(name="a", done_by="worker"))
    assert workflow_clock.advance(timedelta(hours=1)) == start + timedelta(hours=1)


def test_started_brokers_are_stopped_after_the_test(workflow_in_process):
    local, broker = workflow_in_process(builder())
    broker.start(workers=1)
    local.trigger("job-2", initial_value=Job(name="b"))
    require(local, "job-2", Status.DONE, Job(name="b", done_by="worker"))


def test_a_real_worker(workflow_worker):
    worker = workflow_worker("jobs", "plugin-jobs.*")
    run_id = wf.trigger("job-3", initial_value=Job(name="c"))
    run = wf.await_status("job-3", run_id, Status.DONE, timeout=60)
    assert run.object.done_by == "worker"
    assert "plugin-jobs.created" in worker.output()
    pytest_worker_pid = worker.proc.pid
    with open(os.environ["WORKER_PID_FILE"], "w") as fh:
        fh.write(str(pytest_worker_pid))


def test_a_worker_that_cannot_start_is_reported(workflow_worker):
    import pytest

    with pytest.raises(RuntimeError, match="exited"):
        workflow_worker("no_such_module", "plugin-jobs.*", ready_timeout=60)
"""


def test_the_fixtures_in_a_users_project(tmp_path: Path, broker_url: str) -> None:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(PROJECT_WORKFLOWS))
    (tmp_path / "test_jobs.py").write_text(textwrap.dedent(PROJECT_TESTS))
    pid_file = tmp_path / "worker.pid"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "CELERY_BROKER_URL": broker_url,
        "WORKFLOW_CELERY_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "WORKER_PID_FILE": str(pid_file),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_jobs.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout
    # The worker was stopped with its test.
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
