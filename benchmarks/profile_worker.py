"""Where a workflow worker's time goes, per transition.

    .venv/bin/python -m benchmarks.profile_worker                 # 1000 runs, timers + py-spy
    .venv/bin/python -m benchmarks.profile_worker --runs 2000 --speedscope /tmp/worker.json

N runs are triggered before one ``celery worker --pool solo`` starts, so the
worker is busy from its first message to its last and every sample is
steady-state work (the step, Celery's receive and ack, and the relay thread all
run in that one process). Three passes, each on a fresh database and Redis db:

1. timers: the worker wraps ``store.lookup``, ``store.update_run``, the
   dispatcher's ``publish`` and the object codec with ``perf_counter``;
2. sampling: the same worker, unwrapped, under ``py-spy record --idle`` (wall
   clock, including time spent waiting on PostgreSQL and Redis);
3. baseline: the bare Celery chain on the same solo worker, for the cost of a
   hop when Celery is all there is.

``redeliver_after`` is set to an hour so the relay never re-sends a doorbell
during the pass: what is measured is the cost of a transition, not of duplicates.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks import chain_app
from benchmarks.environment import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, flush_redis, fresh_database
from benchmarks.phases import FLOW_QUEUES, TRANSITIONS_PER_RUN, Settings, _build_client, _count_finished
from benchmarks.worker_hooks import read_stats
from benchmarks.workers import WorkerProcess, WorkerSpec
from examples.order_processing import Order
from workflow_celery import SQLStore

PROFILE_REDELIVER_AFTER_S = 3600.0
SAMPLE_RATE = 250
DEFAULT_REDIS_DB = 11

# Buckets for py-spy stacks, tried in order against each frame from the innermost
# outwards... except that the *outermost* matching rule wins, so time inside
# ``update_run`` spent in psycopg counts as ``update_run`` (what the engine asked
# for), not as "psycopg". Patterns match "function (file:line)" frames.
BUCKETS: list[tuple[str, str]] = [
    ("store.update_run (compare-and-set commit)", r"^update_run \(.*workflow_celery/sql/store\.py"),
    ("store.lookup (read the run)", r"^lookup \(.*workflow_celery/sql/store\.py"),
    ("publish next doorbell (Celery send_task)", r"^publish \(.*workflow_celery/celery_adapter/__init__\.py"),
    ("object codec (pydantic JSON)", r"^(encode|decode) \(.*workflow_celery/core/codec\.py"),
    ("the step functions", r"^(validate|pay|fulfil) \(.*examples/order_processing\.py"),
    ("rest of handle_step (engine)", r"^handle_step \(.*workflow_celery/core/engine\.py"),
    ("chain hop: publish next hop", r"^send_hop \(.*benchmarks/chain_app\.py"),
    ("chain hop: record completion in Redis", r"^rpush \("),
    ("Celery task trace (around the task)", r"^(trace_task|fast_trace_task|build_tracer) \(.*celery/app/trace\.py"),
    ("Celery receive, ack, events (consumer)", r"celery/worker/|kombu/|celery/events/"),
]


@dataclass
class PassResult:
    name: str
    items: int
    wall_s: float
    counts: Counter[str]
    seconds: Counter[str]
    samples: Counter[str]
    total_samples: int


def _pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: install it in the venv (pip install py-spy)")
    return found


@contextmanager
def _sampling(pid: int, out: Path, enabled: bool) -> Iterator[None]:
    """py-spy attached to ``pid`` for the duration of the block (raw collapsed stacks, wall clock)."""
    if not enabled:
        yield
        return
    cmd = [_pyspy(), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format", "raw",
           "--idle", "--threads", "--nonblocking", "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # let py-spy attach before the block measures anything
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _classify(stack: list[str]) -> str:
    for label, pattern in BUCKETS:
        rx = re.compile(pattern)
        if any(rx.search(frame) for frame in stack):
            return label
    if any("select" in f or "poll" in f or "_brpop" in f for f in stack[-3:]):
        return "waiting for a message (idle)"
    return "other"


def read_samples(path: Path, thread_hint: str = "MainThread") -> tuple[Counter[str], int]:
    """Bucket the main thread's samples of a py-spy raw file; returns (samples by bucket, total)."""
    buckets: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return buckets, 0
    for line in path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        frames = stack_text.split(";")
        # py-spy --threads prefixes each stack with the thread; only the main thread runs tasks.
        if frames and frames[0].startswith("thread") and thread_hint not in frames[0]:
            if not any("workflow-celery-relay" in f or "_relay_loop" in f for f in frames):
                pass
            buckets["(other threads: relay, heartbeat)"] += int(count_text)
            continue
        buckets[_classify(frames[1:])] += int(count_text)
        total += int(count_text)
    return buckets, total


def _trigger_runs(settings: Settings, broker_url: str, db_url: str, n: int) -> None:
    store = SQLStore(db_url)
    try:
        store.create_schema()
        wf = _build_client(broker_url, store, settings)
        for i in range(n):
            wf.trigger(f"prof-{i}", initial_value=Order(id=f"o{i}", items=["book"], total=10.0))
    finally:
        store.dispose()


def _wait(predicate_count: int, count: object, timeout: float) -> None:
    del predicate_count, count, timeout  # placeholder kept for type checkers


def flow_pass(
    name: str, settings: Settings, broker_url: str, workdir: Path, *, timers: bool, sample: bool
) -> PassResult:
    flush_redis(broker_url)
    stats_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    spy_out = workdir / f"{name}.pyspy.txt"
    with fresh_database(settings.pg_admin_url, name) as db_url:
        _trigger_runs(settings, broker_url, db_url, settings.runs)
        env = {
            "CELERY_BROKER_URL": broker_url,
            "WORKFLOW_CELERY_DATABASE_URL": db_url,
            "BENCH_STATS_DIR": str(stats_dir),
            "BENCH_REDELIVER_AFTER": str(PROFILE_REDELIVER_AFTER_S),
            "BENCH_TIMINGS": "1" if timers else "0",
        }
        store = SQLStore(db_url)
        spec = WorkerSpec("benchmarks.flow_app", FLOW_QUEUES, concurrency=1, pool="solo", loglevel=settings.loglevel)
        worker = WorkerProcess(spec, workdir, env, name)
        try:
            worker.wait_ready()
            with _sampling(worker.pid, spy_out, sample):
                started = time.monotonic()
                deadline = started + settings.timeout
                while _count_finished(store) < settings.runs:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name}: runs not finished after {settings.timeout}s")
                    time.sleep(0.02)
                wall = time.monotonic() - started
        finally:
            worker.stop()
            store.dispose()
    counts, seconds = read_stats(stats_dir)
    samples, total = read_samples(spy_out)
    return PassResult(name, settings.runs * TRANSITIONS_PER_RUN, wall, counts, seconds, samples, total)


def chain_pass(name: str, settings: Settings, broker_url: str, workdir: Path, *, sample: bool) -> PassResult:
    flush_redis(broker_url)
    app = chain_app.app
    app.conf.broker_url = broker_url
    client = redis.Redis.from_url(broker_url)
    spy_out = workdir / f"{name}.pyspy.txt"
    try:
        with app.producer_or_acquire() as producer:
            for i in range(settings.runs):
                chain_app.send_hop(1, f"p{i}", time.time(), chain_app.DONE_KEY, producer)
        spec = WorkerSpec("benchmarks.chain_app", ",".join(chain_app.QUEUES), pool="solo", loglevel=settings.loglevel)
        worker = WorkerProcess(spec, workdir, {"CELERY_BROKER_URL": broker_url}, name)
        try:
            worker.wait_ready()
            with _sampling(worker.pid, spy_out, sample):
                started = time.monotonic()
                deadline = started + settings.timeout
                while client.llen(chain_app.DONE_KEY) < settings.runs:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name}: chains not done after {settings.timeout}s")
                    time.sleep(0.02)
                wall = time.monotonic() - started
        finally:
            worker.stop()
    finally:
        client.close()
        flush_redis(broker_url)
    samples, total = read_samples(spy_out)
    return PassResult(name, settings.runs * chain_app.HOPS, wall, Counter(), Counter(), samples, total)


def report(timed: PassResult, sampled: PassResult, chain: PassResult) -> None:
    print(
        f"\nsolo worker, {timed.items} transitions queued before start (redeliver_after {PROFILE_REDELIVER_AFTER_S:g}s)"
    )
    for r in (timed, sampled, chain):
        unit = "hop" if r is chain else "transition"
        print(f"  {r.name:<9} {r.items / r.wall_s:7.1f} {unit}s/s  = {r.wall_s / r.items * 1000:.2f} ms per {unit}")
    n = timed.items
    print(f"\ntimers ({timed.name} pass), per transition:")
    handle = sum(v for k, v in timed.seconds.items() if k.startswith("outcome."))
    print(f"  {'wall clock (worker busy throughout)':<40} {timed.wall_s / n * 1000:6.3f} ms")
    print(f"  {'handle_step (everything the library does)':<40} {handle / n * 1000:6.3f} ms")
    for key in ("store.lookup", "store.update_run", "dispatcher.publish", "codec.decode", "codec.encode"):
        calls = timed.counts.get(key, 0)
        print(f"    {key:<38} {timed.seconds.get(key, 0.0) / n * 1000:6.3f} ms   ({calls} calls)")
    print(f"  {'outside handle_step (Celery, worker loop)':<40} {(timed.wall_s - handle) / n * 1000:6.3f} ms")
    for r in (sampled, chain):
        if not r.total_samples:
            continue
        unit = "hop" if r is chain else "transition"
        print(f"\npy-spy ({r.name} pass, {r.total_samples} main-thread samples at {SAMPLE_RATE} Hz, wall clock):")
        per_item = r.wall_s / r.items * 1000
        for label, count in r.samples.most_common():
            if label.startswith("(other threads"):
                continue
            share = count / r.total_samples
            print(f"  {label:<45} {share * 100:5.1f}%  ~{share * per_item:6.3f} ms per {unit}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--no-py-spy", action="store_true", help="timers only")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB)
    p.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    p.add_argument("--keep", type=Path, default=None, help="copy the py-spy raw stacks and worker logs here")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
    settings = Settings(
        runs=args.runs, workers=1, concurrency=1, pool="solo", loglevel=args.loglevel, repeats=1, idle_samples=0,
        redeliver_after=PROFILE_REDELIVER_AFTER_S, timeout=600.0, redis_url=args.redis_url,
        pg_admin_url=args.pg_admin_url,
    )  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="wfc-profile-"))
    sample = not args.no_py_spy
    try:
        timed = flow_pass("timers", settings, broker_url, workdir, timers=True, sample=False)
        sampled = flow_pass("sampled", settings, broker_url, workdir, timers=False, sample=sample)
        chain = chain_pass("chain", settings, broker_url, workdir, sample=sample)
        report(timed, sampled, chain)
    finally:
        if args.keep is not None:
            shutil.copytree(workdir, args.keep, dirs_exist_ok=True)
            print(f"\nraw stacks and logs copied to {args.keep}")
        shutil.rmtree(workdir, ignore_errors=True)
        flush_redis(broker_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
