"""One trial of each system: start workers, trigger N items at once, wait, measure, stop.

(a) ``chain``: a bare Celery chain of three tasks (``benchmarks.chain_app``).
(b) ``workflow``: three steps of the order workflow (``benchmarks.flow_app``).

Both use the same Redis db (flushed before each trial), the same
``celeryconfig`` and the same worker command line; the workflow gets a fresh
PostgreSQL database for each trial, so no trial inherits another's tables.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from celery import Celery

from benchmarks import chain_app, cpu
from benchmarks.environment import flush_redis, fresh_database
from benchmarks.worker_hooks import TASK_EVENTS_ENV, read_stats
from benchmarks.workers import WorkerSpec, running_workers
from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import RunState, SQLStore, Workflow

HOPS = chain_app.HOPS
FLOW = [OrderStatus.CREATED, OrderStatus.VALIDATED, OrderStatus.PAID, OrderStatus.FULFILLED]
TRANSITIONS_PER_RUN = len(FLOW) - 1
FLOW_QUEUES = "order-processing.*"
IDLE_KEY = "bench-chain:idle"
IDLE_TIMEOUT_S = 30.0
STALL_S = 60.0
FINISHED_VALUES = [int(s) for s in RunState if s.finished]


@dataclass(frozen=True)
class Settings:
    runs: int
    workers: int
    concurrency: int
    pool: str
    loglevel: str
    repeats: int
    idle_samples: int
    redeliver_after: float | None
    timeout: float
    redis_url: str
    pg_admin_url: str
    synchronous_commit: str | None = None
    task_events: bool | None = None

    def worker_env(self) -> dict[str, str]:
        """Environment both systems' workers get on top of their own."""
        return {} if self.task_events is None else {TASK_EVENTS_ENV: "1" if self.task_events else "0"}

    def database_settings(self) -> dict[str, str]:
        return {} if self.synchronous_commit is None else {"synchronous_commit": self.synchronous_commit}

    def worker_specs(self, app: str, queues: str) -> list[WorkerSpec]:
        spec = WorkerSpec(app, queues, concurrency=self.concurrency, pool=self.pool, loglevel=self.loglevel)
        return [spec] * self.workers


@dataclass
class Trial:
    """What one trial of one system measured. Times in seconds; ``throughput`` in items (hops/transitions) per s."""

    system: str
    trial: int
    items: int
    trigger_s: float
    window_s: float
    throughput: float
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    idle_latency_p50_s: float | None = None
    idle_latency_p99_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """Fails a trial that takes too long, or sooner if nothing has finished for ``STALL_S``.

    A trial stalls when its messages are gone (say, the Redis db was flushed by
    someone else); waiting for the full timeout would only hide that.
    """

    def __init__(self, what: str, total: int, timeout: float) -> None:
        self.what = what
        self.total = total
        now = time.monotonic()
        self.deadline = now + timeout
        self.timeout = timeout
        self.last = -1
        self.last_change = now

    def check(self, done: int) -> None:
        now = time.monotonic()
        if done != self.last:
            self.last, self.last_change = done, now
        if now > self.deadline:
            raise TimeoutError(f"{self.what}: {done} of {self.total} done after {self.timeout:.0f}s")
        if now - self.last_change > STALL_S:
            raise TimeoutError(f"{self.what}: stalled at {done} of {self.total} for {STALL_S:.0f}s")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _trial(
    system: str,
    number: int,
    items: int,
    started: float,
    trigger_s: float,
    spans: list[tuple[float, float]],
    idle: list[float],
) -> Trial:
    """``spans`` are (trigger time, end time) pairs in epoch seconds, one per chain or run."""
    end = max(e for _, e in spans)
    window = end - started
    latencies = [e - t for t, e in spans]
    return Trial(
        system=system,
        trial=number,
        items=items,
        trigger_s=trigger_s,
        window_s=window,
        throughput=items / window,
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
        latency_max_s=max(latencies),
        idle_latency_p50_s=percentile(idle, 50) if idle else None,
        idle_latency_p99_s=percentile(idle, 99) if idle else None,
    )


# --------------------------------------------------------------------------- (a) bare Celery chain


def run_chain_trial(settings: Settings, number: int, broker_url: str, workdir: Path) -> Trial:
    flush_redis(broker_url)
    # The driver publishes through the workers' own app module, pointed at the benchmark's Redis db.
    app: Celery = chain_app.app
    app.conf.broker_url = broker_url
    client = redis.Redis.from_url(broker_url)
    env = {"CELERY_BROKER_URL": broker_url, **settings.worker_env()}
    specs = settings.worker_specs("benchmarks.chain_app", ",".join(chain_app.QUEUES))
    try:
        with running_workers(specs, workdir, env, prefix=f"chain{number}-") as workers:
            groups = [w.pid for w in workers]
            n = settings.runs
            cpu_before = cpu.snapshot(groups)
            started = time.time()
            with app.producer_or_acquire() as producer:
                for i in range(n):
                    chain_app.send_hop(1, f"t{number}-{i}", time.time(), chain_app.DONE_KEY, producer)
            trigger_s = time.time() - started
            watch = Progress(f"chain trial {number}", n, settings.timeout)
            while (done := int(client.llen(chain_app.DONE_KEY))) < n:
                watch.check(done)
                time.sleep(0.05)
            cpu_used = cpu.used(cpu_before, cpu.snapshot(groups), postgresql_pids=set())
            spans = [_span(raw) for raw in client.lrange(chain_app.DONE_KEY, 0, -1)]
            idle: list[float] = []
            for i in range(settings.idle_samples):
                # One chain at a time: the latency of a hop on idle workers, with no queue in front of it.
                with app.producer_or_acquire() as producer:
                    chain_app.send_hop(1, f"idle{number}-{i}", time.time(), IDLE_KEY, producer)
                popped = client.blpop([IDLE_KEY], timeout=IDLE_TIMEOUT_S)
                if popped is None:
                    raise TimeoutError(f"idle chain {i} not done after {IDLE_TIMEOUT_S}s")
                trigger_ts, end_ts = _span(popped[1])
                idle.append(end_ts - trigger_ts)
    finally:
        client.close()
        flush_redis(broker_url)
    trial = _trial("chain", number, n * HOPS, started, trigger_s, spans, idle)
    _add_cpu(trial, cpu_used)
    return trial


def _add_cpu(trial: Trial, cpu_used: dict[str, float]) -> None:
    mine = {role: s for role, s in sorted(cpu_used.items()) if role != "other"}
    trial.extra["cpu_s"] = cpu_used
    trial.extra["cpu_ms_per_item"] = {role: s * 1000 / trial.items for role, s in mine.items()}
    # Load from processes outside the benchmark, as a share of the machine: above a few
    # percent, the trial competed with something else and its figures are suspect.
    trial.extra["other_load"] = cpu_used.get("other", 0.0) / (trial.window_s * (os.cpu_count() or 1))


def _span(raw: bytes | str) -> tuple[float, float]:
    trigger_ts, end_ts = raw.split()
    return float(trigger_ts), float(end_ts)


# --------------------------------------------------------------------------- (b) workflow


def build_client(broker_url: str, store: SQLStore, settings: Settings) -> Workflow[Order, OrderStatus]:
    app = Celery("bench-client")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url
    options: dict[str, Any] = {}
    if settings.redeliver_after is not None:
        # The trigger writes the first doorbell's due time, so the client needs the workers' setting too.
        options["redeliver_after"] = timedelta(seconds=settings.redeliver_after)
    return order_workflow().build(app, store, **options)


def count_finished(store: SQLStore) -> int:
    # One indexed count per poll: polling run by run would load the database under test.
    query = sa.text("SELECT count(*) FROM workflow_records WHERE run_state = ANY(:finished)")
    with store.engine.connect() as conn:
        return int(conn.execute(query, {"finished": FINISHED_VALUES}).scalar_one())


def _run_span(store: SQLStore, run_id: str) -> tuple[float, float, bool]:
    """(created, completed, followed the expected path) of a finished run.

    Completion is the history row of the terminal status, written by the commit
    that completed the run; both times come from the store's clock (this machine's).
    """
    created = store.lookup(run_id).created_at.timestamp()
    entries = store.history(run_id)
    completed = entries[-1].created_at.timestamp()
    ok = [e.status for e in entries] == FLOW and entries[-1].run_state == RunState.COMPLETED
    return created, completed, ok


def run_flow_trial(settings: Settings, number: int, broker_url: str, workdir: Path) -> Trial:
    flush_redis(broker_url)
    stats_dir = Path(tempfile.mkdtemp(prefix=f"flow{number}-stats-", dir=workdir))
    try:
        with fresh_database(settings.pg_admin_url, f"t{number}", settings.database_settings()) as db_url:
            store = SQLStore(db_url)
            try:
                store.create_schema()
                wf = build_client(broker_url, store, settings)
                env = {
                    "CELERY_BROKER_URL": broker_url,
                    "WORKFLOW_CELERY_DATABASE_URL": db_url,
                    "BENCH_STATS_DIR": str(stats_dir),
                    **settings.worker_env(),
                }
                if settings.redeliver_after is not None:
                    env["BENCH_REDELIVER_AFTER"] = str(settings.redeliver_after)
                specs = settings.worker_specs("benchmarks.flow_app", FLOW_QUEUES)
                with running_workers(specs, workdir, env, prefix=f"flow{number}-") as workers:
                    trial = _measure_flow(settings, number, wf, store, [w.pid for w in workers])
                counts, _ = read_stats(stats_dir)
            finally:
                store.dispose()
    finally:
        flush_redis(broker_url)
    step_messages = sum(v for k, v in counts.items() if k.startswith("outcome."))
    trial.extra.update(
        {
            "step_messages": step_messages,
            # Beyond one per transition: doorbells rung again by the relay, answered as duplicates.
            "extra_messages": step_messages - (settings.runs + settings.idle_samples) * TRANSITIONS_PER_RUN,
            "outcomes": {k.removeprefix("outcome."): v for k, v in counts.items() if k.startswith("outcome.")},
            "relay_published": counts.get("relay.published", 0),
        }
    )
    return trial


def _measure_flow(
    settings: Settings, number: int, wf: Workflow[Order, OrderStatus], store: SQLStore, groups: list[int]
) -> Trial:
    n = settings.runs
    cpu_before = cpu.snapshot(groups)
    started = time.time()
    run_ids = [
        wf.trigger(f"bench-{number}-{i}", initial_value=Order(id=f"o{i}", items=["book"], total=10.0)) for i in range(n)
    ]
    trigger_s = time.time() - started
    watch = Progress(f"workflow trial {number}", n, settings.timeout)
    while (done := count_finished(store)) < n:
        watch.check(done)
        time.sleep(0.1)
    with store.engine.connect() as conn:
        mine = cpu.postgresql_pids(conn)
    cpu_used = cpu.used(cpu_before, cpu.snapshot(groups), postgresql_pids=mine)
    spans: list[tuple[float, float]] = []
    wrong = 0
    for run_id in run_ids:
        created, completed, ok = _run_span(store, run_id)
        spans.append((created, completed))
        wrong += not ok
    idle: list[float] = []
    for i in range(settings.idle_samples):
        run_id = wf.trigger(f"idle-{number}-{i}", initial_value=Order(id=f"i{i}", items=["book"], total=10.0))
        idle_deadline = time.monotonic() + IDLE_TIMEOUT_S
        while not store.lookup(run_id).run_state.finished:
            if time.monotonic() > idle_deadline:
                raise TimeoutError(f"idle run {i} not finished after {IDLE_TIMEOUT_S}s")
            time.sleep(0.005)
        created, completed, ok = _run_span(store, run_id)
        idle.append(completed - created)
        wrong += not ok
    trial = _trial("workflow", number, n * TRANSITIONS_PER_RUN, started, trigger_s, spans, idle)
    _add_cpu(trial, cpu_used)
    trial.extra["runs_not_on_expected_path"] = wrong
    return trial


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
