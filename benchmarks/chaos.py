"""Chaos soak: runs flow through real workers while PostgreSQL restarts, Redis is flushed and workers are killed.

    .venv/bin/python -m benchmarks.chaos                 # 2000 runs, about 4 minutes
    .venv/bin/python -m benchmarks.chaos --runs 5000 --seed 7

Runs of ``benchmarks.chaos_app`` (three steps) are triggered at a steady rate
through two ``celery worker`` processes. Meanwhile, at random intervals of 5
to 40 seconds, one of three things happens: the local PostgreSQL cluster is
restarted (``pg_ctlcluster … restart -m fast``), the broker's Redis db is
flushed (every queued message is lost), or a worker and its pool are
SIGKILLed (and a new one started). When every run has been triggered the
chaos stops and the soak waits for every run to finish, then prints:

- runs lost: triggered runs that never reached DONE;
- transitions applied twice: runs whose object lists a step twice, or whose
  history holds a status twice;
- steps executed concurrently: two executions of one step of one run whose
  [start, end] intervals overlap (an execution cut short by a kill has no end
  and is left out, and counted apart).

Each must be 0; the command exits 1 otherwise. It restarts the machine's
PostgreSQL, so run it on a machine of your own, not beside other work.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.environment import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, flush_redis, fresh_database
from benchmarks.workers import WorkerProcess, WorkerSpec

QUEUES = "chaos-soak.*"
EVENTS = ("postgres-restart", "redis-flush", "worker-kill")


def _restart_postgres() -> None:
    versions = sorted(os.listdir("/etc/postgresql"))
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


class Soak:
    def __init__(self, args: argparse.Namespace, url: str, broker: str, workdir: Path) -> None:
        self.args = args
        self.url = url
        self.broker = broker
        self.workdir = workdir
        self.env = {
            "WORKFLOW_CELERY_DATABASE_URL": url,
            "CELERY_BROKER_URL": broker,
            "CHAOS_REDELIVER_AFTER": str(args.redeliver_after),
        }
        self.spec = WorkerSpec("benchmarks.chaos_app", QUEUES, concurrency=args.concurrency)
        self.workers: list[WorkerProcess] = []
        self.events: Counter[str] = Counter()
        self.rng = random.Random(args.seed)
        self.triggering = threading.Event()
        self.triggering.set()
        self.stop = threading.Event()
        self._seq = 0

    def start_worker(self) -> None:
        self._seq += 1
        worker = WorkerProcess(self.spec, self.workdir, self.env, f"chaos{self._seq}")
        worker.wait_ready()
        self.workers.append(worker)

    def chaos(self) -> None:
        while not self.stop.wait(self.rng.uniform(self.args.min_interval, self.args.max_interval)):
            event = self.rng.choice(self.args.events)
            started = time.monotonic()
            if event == "postgres-restart":
                _restart_postgres()
            elif event == "redis-flush":
                flush_redis(self.broker)
            else:
                victim = self.workers.pop(self.rng.randrange(len(self.workers)))
                os.killpg(victim.pid, signal.SIGKILL)
                victim.proc.wait(10)
                self.start_worker()
            self.events[event] += 1
            print(f"  chaos: {event} ({time.monotonic() - started:.1f}s)", flush=True)

    def trigger_all(self, wf: Any) -> None:
        from workflow_celery import WorkflowInProgress

        gap = 1.0 / self.args.rate
        next_at = time.monotonic()
        for i in range(self.args.runs):
            foreign_id = f"c-{i}"
            while True:
                try:
                    wf.trigger(foreign_id)
                    break
                except WorkflowInProgress:
                    break  # an earlier try committed, and its answer was lost with the connection
                except Exception as exc:  # the database is restarting: try again, as a caller would
                    self.events["trigger retried"] += 1
                    if self.events["trigger retried"] % 20 == 1:
                        print(f"  trigger of {foreign_id} retried: {type(exc).__name__}", flush=True)
                    time.sleep(0.2)
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))
            if (i + 1) % 500 == 0:
                print(f"  {i + 1} runs triggered", flush=True)


def _report(engine: sa.Engine, runs: int) -> dict[str, int]:
    with engine.connect() as conn:
        done = conn.execute(
            sa.text("SELECT count(*) FROM workflow_records WHERE workflow_name = 'chaos-soak' AND status = 4")
        ).scalar_one()
        twice_in_object = conn.execute(
            sa.text(
                "SELECT count(*) FROM workflow_records WHERE workflow_name = 'chaos-soak' AND status = 4 "
                'AND object::jsonb -> \'steps\' <> \'["first", "second", "done"]\'::jsonb'
            )
        ).scalar_one()
        twice_in_history = conn.execute(
            sa.text(
                "SELECT count(DISTINCT run_id) FROM (SELECT run_id, status FROM workflow_history "
                "GROUP BY run_id, status HAVING count(*) > 1) AS d"
            )
        ).scalar_one()
        concurrent = conn.execute(
            sa.text(
                "SELECT count(*) FROM chaos_executions a JOIN chaos_executions b "
                "ON a.run_id = b.run_id AND a.status = b.status AND a.id < b.id "
                "WHERE a.ended_at IS NOT NULL AND b.ended_at IS NOT NULL "
                "AND a.started_at < b.ended_at AND b.started_at < a.ended_at"
            )
        ).scalar_one()
        executions = conn.execute(sa.text("SELECT count(*) FROM chaos_executions")).scalar_one()
        cut_short = conn.execute(sa.text("SELECT count(*) FROM chaos_executions WHERE ended_at IS NULL")).scalar_one()
    return {
        "runs": runs,
        "runs completed": done,
        "runs lost": runs - done,
        "transitions applied twice": twice_in_object + twice_in_history,
        "steps executed concurrently": concurrent,
        "step executions": executions,
        "step executions beyond one per step": executions - 3 * runs,
        "executions cut short (no end recorded)": cut_short,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--rate", type=float, default=10.0, help="runs triggered per second")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--min-interval", type=float, default=5.0, help="seconds between chaos events, at least")
    p.add_argument("--max-interval", type=float, default=40.0, help="seconds between chaos events, at most")
    p.add_argument("--redeliver-after", type=float, default=3.0, help="the workflow's redeliver_after (s)")
    p.add_argument("--finish-timeout", type=float, default=600.0, help="seconds to wait for the runs at the end")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--events",
        type=lambda text: text.split(","),
        default=list(EVENTS),
        help=f"comma-separated chaos events to choose from (default: {','.join(EVENTS)})",
    )
    p.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis server; the soak uses db 2")
    args = p.parse_args(argv)
    unknown = set(args.events) - set(EVENTS)
    if unknown:
        p.error(f"unknown chaos event(s) {', '.join(sorted(unknown))}; choose from {', '.join(EVENTS)}")
    broker = args.redis_url.rstrip("/") + "/2"
    # A SIGTERM (a CI timeout, kill) still stops the workers and drops the database on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    flush_redis(broker)
    with fresh_database(args.pg_admin_url, "chaos") as url, tempfile.TemporaryDirectory() as tmp:
        os.environ["WORKFLOW_CELERY_DATABASE_URL"] = url
        os.environ["CELERY_BROKER_URL"] = broker
        from benchmarks import chaos_app

        chaos_app.store.create_schema()
        engine = sa.create_engine(url, pool_pre_ping=True)
        with engine.begin() as conn:
            conn.execute(sa.text(chaos_app.EXECUTIONS_DDL))
        soak = Soak(args, url, broker, Path(tmp))
        chaos = threading.Thread(target=soak.chaos, name="chaos", daemon=True)
        try:
            for _ in range(args.workers):
                soak.start_worker()
            started = time.monotonic()
            print(f"{args.runs} runs at {args.rate}/s through {args.workers} workers; chaos every "
                  f"{args.min_interval:.0f}-{args.max_interval:.0f}s", flush=True)  # fmt: skip
            chaos.start()
            soak.trigger_all(chaos_app.wf)
            soak.stop.set()
            chaos.join()
            print(f"triggering done after {time.monotonic() - started:.0f}s; chaos stopped: {dict(soak.events)}")
            deadline = time.monotonic() + args.finish_timeout
            done = 0
            while time.monotonic() < deadline:
                try:
                    done = chaos_app.store.count_runs("chaos-soak", status=4)
                except Exception:
                    done = -1
                if done == args.runs:
                    break
                time.sleep(1.0)
            print(f"all finished after {time.monotonic() - started:.0f}s" if done == args.runs else
                  f"gave up waiting: {done} of {args.runs} finished")  # fmt: skip
            report = _report(engine, args.runs)
        finally:
            soak.stop.set()
            for worker in soak.workers:
                worker.stop()
            chaos_app.store.dispose()
            engine.dispose()
    for key, value in report.items():
        print(f"{key:>42}: {value}")
    bad = report["runs lost"] + report["transitions applied twice"] + report["steps executed concurrently"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
