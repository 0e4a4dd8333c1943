"""Throughput and latency of workflow-celery against a bare Celery chain, side by side.

    .venv/bin/python -m benchmarks.run                    # 2000 runs, 2 workers x 1 process, a b a b
    .venv/bin/python -m benchmarks.run --quick            # smoke size
    .venv/bin/python -m benchmarks.run --json results.json
    .venv/bin/python -m benchmarks.run --with-dbos        # adds a peer, DBOS Transact (benchmarks.dbos_peer)

(a) ``chain``: N chains of three no-op Celery tasks, each enqueuing the next;
(b) ``workflow``: N runs of the three-step order workflow, started with ``wf.trigger``.

Both are triggered all at once on freshly started ``celery worker`` processes
(same count, concurrency, pool and ``celeryconfig``), on the same Redis db and
PostgreSQL server. Trials alternate a, b, a, b... and the summary takes the
median of each system, because a small machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import workflow_celery
from benchmarks.environment import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, machine_info
from benchmarks.phases import (
    FLOW_QUEUES,
    HOPS,
    TRANSITIONS_PER_RUN,
    Settings,
    Trial,
    median_or_none,
    run_chain_trial,
    run_flow_trial,
)
from benchmarks.workers import ROOT

QUICK_RUNS = 200
# The acceptance tests flush dbs 3 to 15 and celeryconfig defaults to db 0: db 2 is left alone.
DEFAULT_REDIS_DB = 2
NOISY_LOAD = 0.10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2000, help="chains / workflow runs triggered at once per trial")
    p.add_argument("--workers", type=int, default=2, help="celery worker processes per system")
    p.add_argument("--concurrency", type=int, default=1, help="pool processes per worker (-c)")
    p.add_argument("--pool", default="prefork", help="worker pool (--pool)")
    p.add_argument(
        "--loglevel", default="WARNING", help="worker --loglevel (INFO adds two log lines per task to both systems)"
    )
    p.add_argument("--repeats", type=int, default=5, help="trials of each system, interleaved a, b, a, b")
    p.add_argument(
        "--idle-samples",
        type=int,
        default=20,
        help="after each trial, items sent one at a time to measure latency without a queue",
    )
    p.add_argument(
        "--redeliver-after",
        type=float,
        default=None,
        help="workflow redeliver_after in seconds (default: the library default)",
    )
    p.add_argument(
        "--synchronous-commit",
        choices=["on", "off", "local", "remote_write", "remote_apply"],
        default=None,
        help="synchronous_commit of the benchmark databases (default: the server's)",
    )
    p.add_argument(
        "--task-events",
        choices=["on", "off"],
        default=None,
        help="override celeryconfig's worker_send_task_events in both systems' workers",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a trial may take to finish")
    p.add_argument("--quick", action="store_true", help=f"smoke size: {QUICK_RUNS} runs, 1 repeat, 5 idle samples")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis server, without a db number")
    p.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB, help="Redis db used, flushed before and after")
    p.add_argument(
        "--pg-admin-url", default=DEFAULT_PG_ADMIN_URL, help="PostgreSQL URL allowed to CREATE and DROP DATABASE"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    p.add_argument(
        "--with-dbos",
        action="store_true",
        help="also run a peer, the same 3-step workflow in DBOS Transact, started in-process and through its queue "
        "(needs: pip install 'dbos>=3.4')",
    )
    p.add_argument(
        "--dbos-queue-polling",
        type=float,
        default=None,
        help="polling_interval_sec of the peer's DBOS queue (default 0.01; DBOS's own default is 1.0)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the worker logs (their directory is printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.repeats, args.idle_samples = QUICK_RUNS, 1, 5
    return args


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def summarise(trials: list[Trial]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for system in ("chain", "workflow"):
        mine = [t for t in trials if t.system == system]
        summary[system] = {
            key: median_or_none([getattr(t, key) for t in mine])
            for key in (
                "throughput",
                "latency_p50_s",
                "latency_p99_s",
                "idle_latency_p50_s",
                "idle_latency_p99_s",
                "window_s",
                "trigger_s",
            )
        }
        summary[system]["trials"] = len(mine)
        summary[system]["throughput_range"] = [min(t.throughput for t in mine), max(t.throughput for t in mine)]
        roles = sorted({role for t in mine for role in t.extra.get("cpu_ms_per_item", {})})
        summary[system]["cpu_ms_per_item"] = {
            role: median_or_none([t.extra.get("cpu_ms_per_item", {}).get(role) for t in mine]) for role in roles
        }
    chain, flow = summary["chain"], summary["workflow"]

    def ratio(key: str) -> float | None:
        a, b = chain.get(key), flow.get(key)
        return None if not a or b is None else b / a

    # Each workflow trial against the chain trial just before it: drifts in the
    # machine's speed over the run cancel out within a pair.
    pairs = zip([t for t in trials if t.system == "chain"], [t for t in trials if t.system == "workflow"], strict=False)
    summary["pair_ratios"] = [b.throughput / a.throughput for a, b in pairs]
    summary["ratio"] = {
        "throughput": ratio("throughput"),
        "throughput_median_of_pairs": median_or_none(summary["pair_ratios"]),
        "latency_p50": ratio("latency_p50_s"),
        "latency_p99": ratio("latency_p99_s"),
        "idle_latency_p50": ratio("idle_latency_p50_s"),
    }
    return summary


def print_header(machine: dict[str, Any], settings: Settings, args: argparse.Namespace) -> None:
    pg = machine["postgresql_settings"]
    print(
        "machine:  ",
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), load average "
        f"{' '.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}",
    )
    print(
        "software: ",
        f"Python {machine['python']}, Celery {machine['celery']} (kombu {machine['kombu']}), "
        f"Redis {machine['redis_server']}, PostgreSQL {machine['postgresql']} "
        f"(synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}), "
        f"SQLAlchemy {machine['sqlalchemy']}, psycopg {machine['psycopg']}, pydantic {machine['pydantic']}, "
        f"workflow-celery {machine['workflow_celery']}",
    )
    redeliver = "library default" if settings.redeliver_after is None else f"{settings.redeliver_after:g}s"
    print(
        "settings: ",
        f"{settings.runs} items at once per trial, {settings.workers} workers x -c "
        f"{settings.concurrency} ({settings.pool}), loglevel {settings.loglevel}, {settings.repeats} trials each "
        f"(a, b interleaved), {settings.idle_samples} idle samples per trial, redeliver_after {redeliver}, "
        f"Redis db {args.redis_db}, celeryconfig.py",
    )
    if settings.synchronous_commit is not None:
        print(f"           benchmark databases: synchronous_commit = {settings.synchronous_commit}")
    if settings.task_events is not None:
        print(f"           workers: worker_send_task_events = {settings.task_events} (overrides celeryconfig)")
    print(
        f"          (a) chain: {HOPS} tasks, queues bench-chain.hop1..{HOPS}; "
        f"(b) workflow: order-processing, {TRANSITIONS_PER_RUN} steps, -Q '{FLOW_QUEUES}'"
    )
    print()


def print_trial(t: Trial) -> None:
    unit = {"chain": "hops/s", "workflow": "transitions/s"}.get(t.system, "steps/s")
    print(
        f"  {t.system:<8} #{t.trial}: {t.throughput:7.1f} {unit:<13} window {t.window_s:6.1f}s "
        f"(trigger {t.trigger_s:5.1f}s)  p50 {_ms(t.latency_p50_s)} ms  p99 {_ms(t.latency_p99_s)} ms  "
        f"idle p50 {_ms(t.idle_latency_p50_s)} ms",
        flush=True,
    )
    cpu = t.extra.get("cpu_ms_per_item", {})
    per = {"chain": "hop", "workflow": "transition"}.get(t.system, "step")
    line = ", ".join(f"{role} {ms:.2f}" for role, ms in cpu.items())
    other = t.extra.get("other_load", 0.0)
    print(
        f"{'':16}CPU ms per {per}: {line} (total {sum(cpu.values()):.2f}); "
        f"other processes used {other:.0%} of the machine{'  <- noisy trial' if other > NOISY_LOAD else ''}"
    )
    if t.system == "workflow":
        e = t.extra
        print(
            f"{'':16}step messages {e.get('step_messages')} (beyond one per transition: {e.get('extra_messages')}), "
            f"relay re-sent {e.get('relay_published')}, runs off the path {e.get('runs_not_on_expected_path')}",
            flush=True,
        )
    elif t.system.startswith("dbos-"):
        e = t.extra
        print(
            f"{'':16}steps recorded {e.get('steps_recorded')} (3 per workflow, idle ones included), "
            f"runs not fulfilled {e.get('runs_not_fulfilled')}",
            flush=True,
        )


def print_table(summary: dict[str, Any]) -> None:
    chain, flow, ratio = summary["chain"], summary["workflow"], summary["ratio"]
    rows = [
        (
            "throughput (items/s)",
            f"{chain['throughput']:.1f} hops/s",
            f"{flow['throughput']:.1f} transitions/s",
            f"{ratio['throughput']:.2f}",
        ),
        (
            "latency p50 under load (ms)",
            _ms(chain["latency_p50_s"]),
            _ms(flow["latency_p50_s"]),
            f"{ratio['latency_p50']:.2f}",
        ),
        (
            "latency p99 under load (ms)",
            _ms(chain["latency_p99_s"]),
            _ms(flow["latency_p99_s"]),
            f"{ratio['latency_p99']:.2f}",
        ),
        (
            "latency p50 idle (ms)",
            _ms(chain["idle_latency_p50_s"]),
            _ms(flow["idle_latency_p50_s"]),
            "-" if ratio["idle_latency_p50"] is None else f"{ratio['idle_latency_p50']:.2f}",
        ),
        ("latency p99 idle (ms)", _ms(chain["idle_latency_p99_s"]), _ms(flow["idle_latency_p99_s"]), ""),
        (
            "throughput range over trials",
            "{:.0f} - {:.0f}".format(*chain["throughput_range"]),
            "{:.0f} - {:.0f}".format(*flow["throughput_range"]),
            "pairs: " + " ".join(f"{r:.2f}" for r in summary["pair_ratios"]),
        ),
        (
            "CPU ms per item (all processes)",
            f"{sum(v for v in chain['cpu_ms_per_item'].values() if v):.2f}",
            f"{sum(v for v in flow['cpu_ms_per_item'].values() if v):.2f}",
            "",
        ),
    ]
    header = ("median of trials", "(a) Celery chain", "(b) workflow-celery", "(b)/(a)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print(line)


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every ``finally`` runs: workers stopped, databases dropped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dbos_peer: Any = None
    if args.with_dbos:
        from benchmarks import dbos_peer

        problem = dbos_peer.missing()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        if args.dbos_queue_polling is None:
            args.dbos_queue_polling = dbos_peer.DEFAULT_QUEUE_POLLING_S
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
    settings = Settings(
        runs=args.runs, workers=args.workers, concurrency=args.concurrency, pool=args.pool, loglevel=args.loglevel,
        repeats=args.repeats, idle_samples=args.idle_samples, redeliver_after=args.redeliver_after,
        timeout=args.timeout, redis_url=args.redis_url, pg_admin_url=args.pg_admin_url,
        synchronous_commit=args.synchronous_commit,
        task_events=None if args.task_events is None else args.task_events == "on",
    )  # fmt: skip
    machine = machine_info(args.pg_admin_url, broker_url)
    machine["workflow_celery"] = workflow_celery.__version__
    if dbos_peer is not None:
        machine["dbos"] = dbos_peer.version()
    print_header(machine, settings, args)
    if dbos_peer is not None:
        print(dbos_peer.describe(settings, args.dbos_queue_polling))
        print()
    workdir = Path(tempfile.mkdtemp(prefix="wfc-bench-"))
    trials: list[Trial] = []
    started = time.monotonic()
    phases: list[Callable[[Settings, int, str, Path], Trial]] = [run_chain_trial, run_flow_trial]
    if dbos_peer is not None:
        phases += dbos_peer.phases(args.dbos_queue_polling)
    try:
        for number in range(1, settings.repeats + 1):
            for phase in phases:
                trial = phase(settings, number, broker_url, workdir)
                trials.append(trial)
                print_trial(trial)
    finally:
        if args.keep_logs:
            print(f"worker logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise([t for t in trials if t.system in ("chain", "workflow")])
    print()
    print_table(summary)
    for system in ("chain", "workflow"):
        cpu = summary[system]["cpu_ms_per_item"]
        print(
            f"CPU ms per item, {system + ':':<9} " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v is not None)
        )
    print(
        f"\n(b)/(a) throughput ratio: {summary['ratio']['throughput']:.2f} (median of pairs "
        f"{summary['ratio']['throughput_median_of_pairs']:.2f})   total time {time.monotonic() - started:.0f}s"
    )
    if dbos_peer is not None:
        summary["dbos"] = dbos_peer.summarise(trials)
        noisy = {
            system: sum(t.extra.get("other_load", 0.0) > NOISY_LOAD for t in trials if t.system == system)
            for system in {t.system for t in trials}
        }
        print("\nThe peer, DBOS Transact (items: our transitions, DBOS steps; CPU: all roles of each system):")
        dbos_peer.print_table(summary["workflow"], summary["dbos"], noisy)
    if args.json is not None:
        result = {
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
            "git_commit": _git_commit(),
            "machine": machine,
            "settings": {**vars(args), "json": str(args.json), "broker_url": broker_url},
            "trials": [t.as_dict() for t in trials],
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
