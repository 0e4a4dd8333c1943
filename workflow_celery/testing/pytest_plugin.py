"""pytest fixtures for your own test suite, loaded automatically once workflow-celery is installed.

- ``workflow_clock``: a :class:`~workflow_celery.testing.FakeClock` at
  2025-01-01 00:00 UTC; pass it to ``build(..., clock=...)``.
- ``workflow_in_process``: ``wf, broker = workflow_in_process(builder, store=None,
  clock=None, **options)`` builds on an in-process broker (the code path of a
  worker, no server); brokers you ``start()`` are stopped after the test.
- ``workflow_worker``: ``worker = workflow_worker("shop.workflows", "order-processing.*",
  env={...})`` starts a real ``celery -A shop.workflows worker -Q 'order-processing.*'``
  in the current directory and returns once it is ready to take messages;
  every worker started is stopped after the test (SIGTERM, SIGKILL after 20 s).
  ``worker.output()`` is what it printed. It raises ``RuntimeError`` with the
  worker's output if the worker exits or is not ready within ``ready_timeout``
  seconds (60).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ..adapters.inprocess import InProcessBroker
from ..builder import Builder
from ..core.workflow import Workflow
from . import FakeClock, in_process

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


@pytest.fixture
def workflow_clock() -> FakeClock:
    """A clock that only moves when told (``advance``, ``set``)."""
    return FakeClock()


@pytest.fixture
def workflow_in_process() -> Iterator[Callable[..., tuple[Workflow[Any, Any], InProcessBroker]]]:
    """Build a builder on an in-process broker; started brokers are stopped after the test."""
    brokers: list[InProcessBroker] = []

    def build(builder: Builder[Any, Any], **kwargs: Any) -> tuple[Workflow[Any, Any], InProcessBroker]:
        wf, broker = in_process(builder, **kwargs)
        brokers.append(broker)
        return wf, broker

    yield build
    for broker in brokers:
        broker.stop()


@pytest.fixture
def workflow_worker() -> Iterator[Callable[..., WorkflowWorker]]:
    """Start real ``celery worker`` processes for the test; all are stopped after it."""
    started: list[WorkflowWorker] = []

    def start(
        app: str,
        queues: str,
        *,
        env: Mapping[str, str] | None = None,
        concurrency: int = 1,
        pool: str = "prefork",
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> WorkflowWorker:
        worker = WorkflowWorker(app, queues, env=env or {}, concurrency=concurrency, pool=pool)
        started.append(worker)
        worker.wait_ready(ready_timeout)
        return worker

    yield start
    for worker in started:
        worker.stop()
        worker.log_path.unlink(missing_ok=True)
