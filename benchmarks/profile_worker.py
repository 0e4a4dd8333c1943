"""Where a worker's time goes, per transition (workflow) and per hop (bare Celery chain).

    .venv/bin/python -m benchmarks.profile_worker
    .venv/bin/python -m benchmarks.profile_worker --runs 2000 --keep /tmp/profile   # keep py-spy stacks and logs

In every pass N items are queued *before* a single worker starts, so the worker
is busy from its first message to its last and everything measured is
steady-state work. Each pass has a fresh database and a flushed Redis db:

- ``flow-solo-timers``: the workflow on ``--pool solo``; the worker wraps
  ``store.claim``, ``store.update_run``, the dispatcher's ``publish`` and the
  object codec, and records wall (``perf_counter``) and CPU (``thread_time``)
  time of each;
- ``chain-solo``, ``flow-prefork``, ``chain-prefork``: wall time per item;
- ``flow-solo-py-spy``, ``chain-solo-py-spy``: under ``py-spy record --idle``
  (wall-clock samples, waiting on PostgreSQL and Redis included), bucketed.

Every pass also reads the CPU time of the worker's processes (main and pool),
PostgreSQL and Redis from /proc; "other processes" is whatever else ran,
py-spy itself in the sampling passes.

``redeliver_after`` is an hour in every workflow pass, so the relay never
re-sends a doorbell: what is measured is a transition, not duplicates.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

from benchmarks import chain_app, cpu
from benchmarks.environment import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, flush_redis, fresh_database
from benchmarks.phases import FLOW_QUEUES, TRANSITIONS_PER_RUN, Settings, build_client, count_finished
from benchmarks.worker_hooks import read_stats
from benchmarks.workers import WorkerProcess, WorkerSpec
from examples.order_processing import Order
from workflow_celery import SQLStore

PROFILE_REDELIVER_AFTER_S = 3600.0
SAMPLE_RATE_HZ = 200
DEFAULT_REDIS_DB = 1  # not 0 (celeryconfig's default), 2 (benchmarks.run) or 3-15 (acceptance tests)
TIMED_PARTS = ("store.claim", "store.update_run", "dispatcher.publish", "codec.decode", "codec.encode")

System = Literal["workflow", "chain"]


# --------------------------------------------------------------------------- py-spy stacks

# A sample goes to the first bucket one of whose patterns matches one of its
# frames ("Class.method (path/file.py:line)"). The task's own parts come first:
# with the solo pool the task runs *inside* Celery's receive callback, so the
# consumer patterns would claim every sample if they were tried first.
BUCKETS: list[tuple[str, str]] = [
    ("store.update_run: compare-and-set + commit", r"SQLStore\.update_run \("),
    ("store.claim: read the run and claim its doorbell", r"SQLStore\.claim \("),
    ("publish the next message (send_task)", r"CeleryDispatcher\.publish \(|send_hop \(.*benchmarks/chain_app"),
    ("record completion in Redis (chain only)", r"^_hop \(.*benchmarks/chain_app.*|rpush \("),
    ("object codec (pydantic)", r"ObjectCodec\.(encode|decode) \("),
    ("rest of the task (engine, step function)", r"Engine\.handle_step \(|^_hop \("),
    ("Celery: ack (acks_late)", r"Request\.acknowledge \(|QoS\.ack \(|Channel\.basic_ack \("),
    ("Celery: task events", r"celery/events/"),
    ("Celery: task tracing around the task", r"celery/app/trace\.py"),
    ("Celery: receive and decode the message", r"on_task_received|Transport\._deliver \("),
    ("Celery: event loop, waiting for messages", r"Hub\.create_loop \("),
]
# Innermost frames that mean "waiting on the network": psycopg's wait for the
# server's answer, redis-py's socket read.
WAITING = re.compile(r"^Connection\.wait \(psycopg/|_read_from_socket \(redis/")
_COMPILED = [(label, re.compile(pattern)) for label, pattern in BUCKETS]


@dataclass
class Samples:
    by_bucket: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)
    total: int = 0


def classify(frames: Sequence[str]) -> str:
    for label, rx in _COMPILED:
        if any(rx.search(f) for f in frames):
            return label
    return "other (runtime, truncated stacks)"


def read_samples(path: Path) -> Samples:
    """Bucket the main thread's samples of a ``py-spy --format raw --threads`` file."""
    result = Samples()
    if not path.exists():
        return result
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        thread, *frames = stack.split(";")
        # Only the main thread runs tasks; the relay thread sleeps between its once-a-second polls.
        if "MainThread" not in thread:
            continue
        count = int(count_text)
        label = classify(frames)
        result.by_bucket[label] += count
        if frames and WAITING.search(frames[-1]):
            result.waiting[label] += count
        result.total += count
    return result


def _pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy (or run with --no-py-spy)")
    return found


@contextmanager
def sampling(pid: int, out: Path) -> Iterator[None]:
    """py-spy attached to ``pid`` for the duration of the block: raw stacks, wall clock (``--idle``)."""
    cmd = [_pyspy(), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ), "--format", "raw",
           "--idle", "--threads", "--nonblocking", "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- passes


@dataclass(frozen=True)
class Pass:
    name: str
    system: System
    pool: str
    timers: bool = False
    sample: bool = False


@dataclass
class PassResult:
    spec: Pass
    items: int
    wall_s: float
    cpu_ms: dict[str, float]
    counts: Counter[str]
    seconds: dict[str, float]
    samples: Samples

    @property
    def unit(self) -> str:
        return "transition" if self.spec.system == "workflow" else "hop"


def _queue_runs(settings: Settings, broker_url: str, db_url: str) -> None:
    store = SQLStore(db_url)
    try:
        store.create_schema()
        wf = build_client(broker_url, store, settings)
        for i in range(settings.runs):
            wf.trigger(f"prof-{i}", initial_value=Order(id=f"o{i}", items=["book"], total=10.0))
    finally:
        store.dispose()


def _queue_chains(settings: Settings, broker_url: str) -> None:
    app = chain_app.app
    app.conf.broker_url = broker_url
    with app.producer_or_acquire() as producer:
        for i in range(settings.runs):
            chain_app.send_hop(1, f"p{i}", time.time(), chain_app.DONE_KEY, producer)


Snapshot = dict[int, tuple[str, float]]


def _drain(
    worker: WorkerProcess, done: Callable[[], bool], out: Path, settings: Settings, p: Pass
) -> tuple[float, Snapshot, Snapshot]:
    """Wait until the queued work is done: (wall seconds, CPU snapshot before, CPU snapshot after)."""
    before = cpu.snapshot([worker.pid])
    started = time.monotonic()
    deadline = started + settings.timeout
    with sampling(worker.pid, out) if p.sample else nullcontext():
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pass {p.name}: work not done after {settings.timeout:.0f}s")
            time.sleep(0.02)
        wall = time.monotonic() - started
    return wall, before, cpu.snapshot([worker.pid])


def _worker_split(worker: WorkerProcess, before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds of the worker's main process and of its pool processes (none with the solo pool)."""
    split: defaultdict[str, float] = defaultdict(float)
    for pid, (role, seconds) in after.items():
        if role == "workers":
            part = "worker main process" if pid == worker.pid else "worker pool process"
            split[part] += seconds - before.get(pid, (role, 0.0))[1]
    return dict(split)


def run_pass(p: Pass, settings: Settings, broker_url: str, workdir: Path) -> PassResult:
    flush_redis(broker_url)
    stats_dir = Path(tempfile.mkdtemp(prefix=f"{p.name}-", dir=workdir))
    spy_out = workdir / f"{p.name}.pyspy.txt"
    try:
        if p.system == "workflow":
            with fresh_database(settings.pg_admin_url, "prof", settings.database_settings()) as db_url:
                _queue_runs(settings, broker_url, db_url)
                env = {
                    "CELERY_BROKER_URL": broker_url,
                    "WORKFLOW_CELERY_DATABASE_URL": db_url,
                    "BENCH_STATS_DIR": str(stats_dir),
                    "BENCH_REDELIVER_AFTER": str(PROFILE_REDELIVER_AFTER_S),
                    "BENCH_TIMINGS": "1" if p.timers else "0",
                }
                store = SQLStore(db_url)
                spec = WorkerSpec("benchmarks.flow_app", FLOW_QUEUES, pool=p.pool, loglevel=settings.loglevel)
                worker = WorkerProcess(spec, workdir, env, p.name)
                try:
                    worker.wait_ready()
                    wall, before, after = _drain(
                        worker, lambda: count_finished(store) >= settings.runs, spy_out, settings, p
                    )
                    with store.engine.connect() as conn:
                        pg_pids = cpu.postgresql_pids(conn)
                    roles = cpu.used(before, after, postgresql_pids=pg_pids)
                    split = _worker_split(worker, before, after)
                finally:
                    worker.stop()
                    store.dispose()
            items = settings.runs * TRANSITIONS_PER_RUN
        else:
            _queue_chains(settings, broker_url)
            client = redis.Redis.from_url(broker_url)
            spec = WorkerSpec(
                "benchmarks.chain_app", ",".join(chain_app.QUEUES), pool=p.pool, loglevel=settings.loglevel
            )
            worker = WorkerProcess(spec, workdir, {"CELERY_BROKER_URL": broker_url}, p.name)
            try:
                worker.wait_ready()
                wall, before, after = _drain(
                    worker, lambda: client.llen(chain_app.DONE_KEY) >= settings.runs, spy_out, settings, p
                )
                roles = cpu.used(before, after, postgresql_pids=set())
                split = _worker_split(worker, before, after)
            finally:
                worker.stop()
                client.close()
            items = settings.runs * chain_app.HOPS
    finally:
        flush_redis(broker_url)
    cpu_ms = {k: v * 1000 / items for k, v in split.items()}
    for role in ("postgresql", "redis"):
        cpu_ms[role] = roles.get(role, 0.0) * 1000 / items
    cpu_ms["other processes (noise)"] = roles.get("other", 0.0) * 1000 / items
    counts, seconds = read_stats(stats_dir)
    return PassResult(p, items, wall, cpu_ms, counts, seconds, read_samples(spy_out))


PASSES = [
    Pass("flow-solo-timers", "workflow", "solo", timers=True),
    Pass("chain-solo", "chain", "solo"),
    Pass("flow-prefork", "workflow", "prefork"),
    Pass("chain-prefork", "chain", "prefork"),
    Pass("flow-solo-py-spy", "workflow", "solo", sample=True),
    Pass("chain-solo-py-spy", "chain", "solo", sample=True),
]


# --------------------------------------------------------------------------- report


def report_timers(timed: PassResult) -> None:
    """Wall, CPU and waiting time per transition of each timed part of ``handle_step``."""
    n = timed.items
    sec = timed.seconds

    def row(label: str, wall: float, cpu_s: float | None, calls: int | None = None) -> None:
        cpu_text = "" if cpu_s is None else f"{cpu_s / n * 1000:7.3f}  {max(wall - cpu_s, 0.0) / n * 1000:7.3f}"
        calls_text = "" if calls is None else f"   ({calls} calls)"
        print(f"  {label:<44} {wall / n * 1000:7.3f}  {cpu_text}{calls_text}")

    handle = sum(v for k, v in sec.items() if k.startswith("outcome."))
    print(f"\ntimers ({timed.spec.name}), ms per transition:   wall      CPU  waiting")
    row("the whole transition (worker always busy)", timed.wall_s, None)
    row("  handle_step: what the library does", handle, sec.get("handle_step.cpu", 0.0))
    for key in TIMED_PARTS:
        row(f"    {key}", sec.get(key, 0.0), sec.get(f"{key}.cpu", 0.0), timed.counts.get(key, 0))
    rest = handle - sum(sec.get(k, 0.0) for k in TIMED_PARTS)
    rest_cpu = sec.get("handle_step.cpu", 0.0) - sum(sec.get(f"{k}.cpu", 0.0) for k in TIMED_PARTS)
    row("    rest (engine, step function, records)", rest, rest_cpu)
    row("  outside handle_step: Celery", timed.wall_s - handle, None)


def report(results: list[PassResult]) -> None:
    n = results[0].items
    print(f"\none worker, {n} items queued before it starts, CPU and wall time per item (ms):")
    roles = ["worker main process", "worker pool process", "postgresql", "redis", "other processes (noise)"]
    header = f"  {'pass':<18} {'pool':<8} {'items/s':>8} {'wall':>6}  " + "  ".join(f"{r[:13]:>13}" for r in roles)
    print(header)
    for r in results:
        cells = "  ".join(f"{r.cpu_ms.get(role, 0.0):13.3f}" for role in roles)
        print(
            f"  {r.spec.name:<18} {r.spec.pool:<8} {r.items / r.wall_s:8.1f} {r.wall_s / r.items * 1000:6.3f}  {cells}"
        )

    for timed in results:
        if timed.spec.timers:
            report_timers(timed)

    for r in results:
        s = r.samples
        if not s.total:
            continue
        per_item = r.wall_s / r.items * 1000
        print(f"\npy-spy ({r.spec.name}: {s.total} main-thread samples at {SAMPLE_RATE_HZ} Hz, wall clock), "
              f"ms per {r.unit}:")  # fmt: skip
        for label, count in s.by_bucket.most_common():
            share = count / s.total
            waiting = s.waiting.get(label, 0) / count if count else 0.0
            note = f"   ({waiting:.0%} waiting on the server)" if waiting >= 0.05 else ""
            print(f"  {label:<46} {share:6.1%} {share * per_item:7.3f}{note}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="workflow runs / chains queued per pass")
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--no-py-spy", action="store_true", help="skip the sampling passes")
    p.add_argument(
        "--synchronous-commit",
        choices=["on", "off", "local"],
        default=None,
        help="synchronous_commit of the profiled databases (default: the server's)",
    )
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB)
    p.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    p.add_argument("--keep", type=Path, default=None, help="copy py-spy stacks and worker logs to this directory")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
    settings = Settings(
        runs=args.runs, workers=1, concurrency=1, pool="solo", loglevel=args.loglevel, repeats=1, idle_samples=0,
        redeliver_after=PROFILE_REDELIVER_AFTER_S, timeout=args.timeout, redis_url=args.redis_url,
        pg_admin_url=args.pg_admin_url, synchronous_commit=args.synchronous_commit,
    )  # fmt: skip
    passes = [x for x in PASSES if not (x.sample and args.no_py_spy)]
    workdir = Path(tempfile.mkdtemp(prefix="wfc-profile-"))
    results: list[PassResult] = []
    try:
        for x in passes:
            results.append(run_pass(x, settings, broker_url, workdir))
            r = results[-1]
            print(f"  {x.name:<18} {r.items / r.wall_s:7.1f} {r.unit}s/s", flush=True)
        report(results)
    finally:
        if args.keep is not None:
            shutil.copytree(workdir, args.keep, dirs_exist_ok=True)
            print(f"\npy-spy stacks and worker logs copied to {args.keep}")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
