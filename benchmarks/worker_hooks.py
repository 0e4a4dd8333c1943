"""Worker-side helpers shared by the benchmark Celery apps.

Imported by ``benchmarks.chain_app`` and ``benchmarks.flow_app`` inside the
``celery worker`` processes. Everything here is driven by environment
variables set by the benchmark driver, so the apps stay importable (and
inert) without them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from celery import Celery, signals

READY_FILE_ENV = "BENCH_READY_FILE"
TASK_EVENTS_ENV = "BENCH_TASK_EVENTS"
STATS_DIR_ENV = "BENCH_STATS_DIR"

# Counters are flushed to disk at most this often: often enough that a worker
# killed at the end still leaves numbers behind, rarely enough to cost nothing.
FLUSH_INTERVAL_S = 0.5


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # The driver waits for this file instead of parsing the log, so workers can
    # run at --loglevel WARNING (no per-task log lines to skew the figures).
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).write_text(str(os.getpid()))


signals.worker_ready.connect(_on_worker_ready, weak=False)


class ProcessStats:
    """Per-process counters and timers, written as ``<stats dir>/<pid>.json``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._last_flush = 0.0
        directory = os.environ.get(STATS_DIR_ENV)
        self._dir = Path(directory) if directory else None

    @property
    def enabled(self) -> bool:
        return self._dir is not None

    def add(self, name: str, seconds: float | None = None, count: int = 1) -> None:
        with self._lock:
            self.counts[name] += count
            if seconds is not None:
                self.seconds[name] += seconds
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self._dir is None:
            return
        with self._lock:
            self._last_flush = time.monotonic()
            data = {"pid": os.getpid(), "counts": dict(self.counts), "seconds": dict(self.seconds)}
        target = self._dir / f"{os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(target)


STATS = ProcessStats()


def _flush(**_: Any) -> None:
    STATS.flush()


# A forked pool child inherits the parent's counters; it must start from zero.
def _reset_in_child(**_: Any) -> None:
    global STATS
    STATS = ProcessStats()


signals.worker_process_init.connect(_reset_in_child, weak=False)
signals.worker_process_shutdown.connect(_flush, weak=False)
signals.worker_shutdown.connect(_flush, weak=False)


def apply_overrides(app: Celery) -> None:
    """Settings the driver may change on top of ``celeryconfig``, for tuning experiments only."""
    events = os.environ.get(TASK_EVENTS_ENV)
    if events is not None:
        app.conf.worker_send_task_events = events == "1"


def stats() -> ProcessStats:
    """The current process's counters (a fresh object in each pool child)."""
    return STATS


def read_stats(directory: Path) -> tuple[Counter[str], defaultdict[str, float]]:
    """Sum the counters and timers every worker process wrote under ``directory``."""
    counts: Counter[str] = Counter()
    seconds: defaultdict[str, float] = defaultdict(float)
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        counts.update(data.get("counts", {}))
        for name, value in data.get("seconds", {}).items():
            seconds[name] += value
    return counts, seconds
