"""Memory soak: 100,000 transitions through two workers, printing the workers' memory every 10,000.

    .venv/bin/python -m benchmarks.soak                       # 100,000 transitions, several minutes
    .venv/bin/python -m benchmarks.soak --transitions 30000   # shorter

Runs of the order workflow (``benchmarks.flow_app``: three transitions each)
are triggered in batches, never more than ``--backlog`` unfinished at once,
through two ``celery worker`` processes (prefork, one pool process each). At
every 10,000 transitions applied the soak prints the resident memory (RSS) of
each worker: its main process plus its pool processes. The soak fails (exit 1)
if any sample of a worker after the warm-up exceeds the first one after it by
more than ``--max-growth`` (10%).

The warm-up lasts at least the tasks' hard time limit: for every task it
starts, Celery's prefork pool arms a soft and a hard time-limit timer in the
worker's main process, and a timer cancelled when its task ends stays in the
timer heap until its time would have come. So the main process grows for the
first ``task_time_limit`` seconds of a busy worker and is flat from then on;
the soak's workers run with time limits of 25/30 s (``--time-limit``) so that
this happens within the first samples.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.environment import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, flush_redis, fresh_database
from benchmarks.phases import TRANSITIONS_PER_RUN, Settings, build_client, count_finished
from benchmarks.workers import running_workers
from examples.order_processing import Order
from workflow_celery import SQLStore

SAMPLE_EVERY = 10_000
PAGE_KB = 4


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total_kb = 0
    for p in [pid, *_descendants(pid)]:
        try:
            total_kb += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024


def _descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backlog", type=int, default=2000, help="runs triggered but not finished, at most")
    p.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (0.10: 10%%)")
    p.add_argument("--time-limit", type=int, default=30, help="the workers' task_time_limit (s); soft: 5 s less")
    p.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis server; the soak uses db 2")
    args = p.parse_args(argv)
    broker = args.redis_url.rstrip("/") + "/2"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = -(-args.transitions // TRANSITIONS_PER_RUN)
    settings = Settings(
        runs=runs, workers=args.workers, concurrency=1, pool="prefork", loglevel="WARNING", repeats=1,
        idle_samples=0, redeliver_after=None, timeout=3600.0, redis_url=args.redis_url, pg_admin_url=args.pg_admin_url,
    )  # fmt: skip
    flush_redis(broker)
    samples: dict[int, list[float]] = {}
    sampled_at: dict[int, float] = {}
    with fresh_database(args.pg_admin_url, "soak") as url, tempfile.TemporaryDirectory() as tmp:
        store = SQLStore(url)
        store.create_schema()
        wf = build_client(broker, store, settings)
        env = {
            "CELERY_BROKER_URL": broker,
            "WORKFLOW_CELERY_DATABASE_URL": url,
            "WORKFLOW_CELERY_TASK_TIME_LIMIT": str(args.time_limit),
            "WORKFLOW_CELERY_TASK_SOFT_TIME_LIMIT": str(max(args.time_limit - 5, 1)),
        }
        specs = settings.worker_specs("benchmarks.flow_app", "order-processing.*")
        try:
            with running_workers(specs, Path(tmp), env, prefix="soak") as workers:
                pids = [w.pid for w in workers]
                print(f"{runs} runs ({runs * TRANSITIONS_PER_RUN} transitions) through {len(pids)} workers")
                print(f"{'transitions':>12}  " + "  ".join(f"worker {i} RSS MiB" for i in range(len(pids))))
                triggered, next_sample, started = 0, SAMPLE_EVERY, time.monotonic()
                while True:
                    done = count_finished(store)
                    while triggered < runs and triggered - done < args.backlog:
                        wf.trigger(
                            f"soak-{triggered}", initial_value=Order(id=f"o{triggered}", items=["book"], total=10.0)
                        )
                        triggered += 1
                    transitions = done * TRANSITIONS_PER_RUN
                    while transitions >= next_sample:
                        samples[next_sample] = [rss_mb(pid) for pid in pids]
                        sampled_at[next_sample] = time.monotonic() - started
                        print(
                            f"{next_sample:>12}  "
                            + "  ".join(f"{mb:>17.1f}" for mb in samples[next_sample])
                            + f"  ({sampled_at[next_sample]:.0f}s)",
                            flush=True,
                        )
                        next_sample += SAMPLE_EVERY
                    if done >= runs:
                        break
                    if time.monotonic() - started > settings.timeout:
                        raise TimeoutError(f"{done} of {runs} runs finished after {settings.timeout:.0f}s")
                    time.sleep(0.5)
                elapsed = time.monotonic() - started
        finally:
            store.dispose()
            flush_redis(broker)
    print(f"{runs * TRANSITIONS_PER_RUN} transitions in {elapsed:.0f}s ({runs * TRANSITIONS_PER_RUN / elapsed:.0f}/s)")
    # The baseline is the first sample taken once the time-limit timers of the first tasks have come due.
    points = [p for p in sorted(samples) if sampled_at[p] >= args.time_limit + 10]
    if len(points) < 2:
        print("too few samples after the warm-up to judge growth: raise --transitions")
        return 1
    warm, rest = samples[points[0]], [samples[p] for p in points[1:]]
    worst = max(max(s[i] for s in rest) / warm[i] - 1 for i in range(len(warm)))
    print(f"largest growth after warm-up (from {points[0]} transitions): {worst:+.1%} (allowed {args.max_growth:+.0%})")
    return 0 if worst <= args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
