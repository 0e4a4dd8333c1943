"""Start and stop real ``celery worker`` subprocesses for a benchmark phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WorkerSpec:
    app: str
    queues: str
    concurrency: int = 1
    pool: str = "prefork"
    loglevel: str = "WARNING"


class WorkerProcess:
    """One ``celery worker`` in a session of its own, so stopping it reaches its pool children too."""

    def __init__(self, spec: WorkerSpec, workdir: Path, env: Mapping[str, str], name: str) -> None:
        self.spec = spec
        self.name = name
        self.log = workdir / f"{name}.log"
        self.ready_file = workdir / f"{name}.ready"
        cmd = [
            sys.executable, "-m", "celery", "-A", spec.app, "worker",
            "-Q", spec.queues, "-c", str(spec.concurrency), "--pool", spec.pool,
            "-n", f"{name}@%h", "--loglevel", spec.loglevel,
            # Gossip and mingle only add broadcast traffic at start-up; both phases go without.
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        full_env = {**os.environ, **env, "BENCH_READY_FILE": str(self.ready_file), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"worker {self.name} not ready after {timeout:.0f}s:\n{self.output()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Warm shutdown (SIGTERM); SIGKILL to the worker's own process group if it hangs."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # The leader is still alive (not reaped), so its group id is still this
            # worker's (start_new_session): this reaches only the processes it forked.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextmanager
def running_workers(
    specs: Sequence[WorkerSpec], workdir: Path, env: Mapping[str, str], prefix: str
) -> Iterator[list[WorkerProcess]]:
    """Start every worker, wait until all consume, and stop them all on the way out, whatever happens."""
    workers: list[WorkerProcess] = []
    try:
        for i, spec in enumerate(specs):
            workers.append(WorkerProcess(spec, workdir, env, f"{prefix}{i}-{uuid.uuid4().hex[:4]}"))
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()
