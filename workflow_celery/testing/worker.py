"""A real ``celery worker`` for a test: started in a session of its own, ready when returned, stopped after.

For the ``workflow_worker`` pytest fixture and for other test runners
(Django's ``TestCase.enterContext(celery_worker(...))``, unittest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class WorkflowWorker:
    """A ``celery worker`` subprocess in a session of its own, so that stopping it reaches its pool."""

    def __init__(self, app: str, queues: str, *, env: Mapping[str, str], concurrency: int, pool: str) -> None:
        self.app = app
        self.queues = queues
        handle, name = tempfile.mkstemp(prefix="workflow-worker-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        cwd = os.getcwd()
        path = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
            "-c", str(concurrency), "--pool", pool, "--loglevel", "INFO",
            "-n", f"workflow-worker-{os.getpid()}-{id(self)}@%h", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        full_env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker -A {self.app} exited ({self.proc.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker -A {self.app} was not ready within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the worker (warm shutdown, then SIGKILL to its whole session after 20 s)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass


@contextmanager
def celery_worker(
    app: str,
    queues: str,
    *,
    env: Mapping[str, str] | None = None,
    concurrency: int = 1,
    pool: str = "prefork",
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[WorkflowWorker]:
    """``celery -A app worker -Q queues`` in the current directory, ready to take messages, until the block ends.

    ``env`` is added to the environment the worker inherits: point it at the
    test's database and broker. The worker is stopped when the block ends
    (SIGTERM, SIGKILL after 20 s). Raises ``RuntimeError`` with the worker's
    output when it exits or is not ready within ``ready_timeout`` seconds.
    """
    worker = WorkflowWorker(app, queues, env=env or {}, concurrency=concurrency, pool=pool)
    try:
        worker.wait_ready(ready_timeout)
        yield worker
    finally:
        worker.stop()
        worker.log_path.unlink(missing_ok=True)
