"""A peer for the benchmark: the order workflow's shape in DBOS Transact, on the same PostgreSQL server.

    .venv/bin/pip install 'dbos>=3.4'           # or: pip install -e '.[bench-dbos]'
    .venv/bin/python -m benchmarks.run --with-dbos

A DBOS workflow of three ``@DBOS.step`` functions (validate, pay, fulfil: the
trivial steps of ``examples/order_processing.py``), taking the order as its
input, measured two ways:

- ``dbos-inproc``: N workflows started at once with ``DBOS.start_workflow`` in
  the DBOS process, which then waits for their handles;
- ``dbos-queue``: N workflows enqueued at once on a DBOS queue
  (``DBOS.register_queue`` + ``DBOS.enqueue_workflow``) that the same process
  dequeues with ``worker_concurrency`` = workers x concurrency of the Celery
  phases (2 by default: as many workflows at once as our pool processes).

Each trial gets a fresh PostgreSQL database (``wfc_bench_dbos_*``, DBOS's system
database, dropped afterwards) and a fresh DBOS process (``python -m
benchmarks.dbos_peer``, in a session of its own), driven over its stdin and
stdout. CPU is read from ``/proc`` like the other phases (``benchmarks.cpu``):
the DBOS process (role ``dbos``) and the PostgreSQL backends of its database
plus the server's background processes. A run's latency is its
``workflow_status`` row's ``completed_at`` minus its ``created_at``.

This module imports ``dbos`` only in the DBOS process: ``benchmarks.run``
without ``--with-dbos`` never imports it.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import cpu
from benchmarks.environment import fresh_database
from benchmarks.phases import Settings, Trial, _add_cpu, _trial, median_or_none
from benchmarks.workers import ROOT

STEPS_PER_RUN = 3
MODES = ("inproc", "queue")
SYSTEMS = tuple(f"dbos-{m}" for m in MODES)
QUEUE_NAME = "bench-orders"
DEFAULT_QUEUE_POLLING_S = 0.01
MIN_VERSION = (3, 4)
INSTALL_HINT = "--with-dbos needs DBOS Transact >= 3.4: .venv/bin/pip install 'dbos>=3.4' (the bench-dbos extra)"
READY_TIMEOUT_S = 60.0
IDLE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# Statuses in which a DBOS workflow has not finished (as DBOS's own wait_first counts them).
UNFINISHED = ("PENDING", "ENQUEUED", "DELAYED")
# The workflow's return value as DBOS's default serializer stores it (base64 of a pickle): compared, never unpickled.
FULFILLED_OUTPUT = base64.b64encode(pickle.dumps("fulfilled")).decode()


def missing() -> str | None:
    """None if a usable DBOS is installed, else the one line saying how to install it (dbos is not imported)."""
    if importlib.util.find_spec("dbos") is None:
        return INSTALL_HINT
    try:
        version = metadata.version("dbos")
    except metadata.PackageNotFoundError:
        return INSTALL_HINT
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_VERSION:
        return f"{INSTALL_HINT} (found {version})"
    return None


def version() -> str:
    return metadata.version("dbos")


# --------------------------------------------------------------------------- driver side (benchmarks.run)


class _Peer:
    """The DBOS process: started in a session of its own, spoken to one JSON line at a time."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.dbos_peer", *args],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=fh,
                start_new_session=True,
            )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self, what: str, timeout: float) -> dict[str, Any]:
        """The next line the process writes, as JSON; fails after ``timeout`` or if the process exits."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DBOS peer: no {what} after {timeout:.0f}s\n{self._tail()}")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(5)
                    raise RuntimeError(f"DBOS peer exited with {self.proc.returncode} before {what}:\n{self._tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Ask the process to destroy DBOS and exit; SIGKILL its session if it does not."""
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(STOP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def run_dbos_trial(
    settings: Settings, number: int, broker_url: str, workdir: Path, *, mode: str, queue_polling_s: float
) -> Trial:
    """One trial of the peer; the signature of ``benchmarks.phases`` trials (``broker_url`` is unused)."""
    del broker_url  # DBOS has no broker: its queue is a table in the same database
    system = f"dbos-{mode}"
    n = settings.runs
    with fresh_database(settings.pg_admin_url, f"dbos_{mode}{number}", settings.database_settings()) as db_url:
        engine = sa.create_engine(db_url, poolclass=sa.NullPool)
        peer = _Peer(
            [
                "--mode", mode, "--db-url", db_url, "--runs", str(n), "--idle-samples", str(settings.idle_samples),
                "--worker-concurrency", str(settings.workers * settings.concurrency),
                "--queue-polling", str(queue_polling_s),
            ],
            workdir / f"{system}{number}.log",
        )  # fmt: skip
        try:
            peer.receive("ready", READY_TIMEOUT_S)
            cpu_before = cpu.snapshot([peer.pid])
            peer.send("go")
            done = peer.receive("end of the burst", settings.timeout)
            with engine.connect() as conn:
                mine = cpu.postgresql_pids(conn)
            cpu_used = cpu.used(cpu_before, cpu.snapshot([peer.pid]), postgresql_pids=mine)
            peer.send("idle")
            idle_ids: list[str] = peer.receive("idle samples", IDLE_TIMEOUT_S * (settings.idle_samples + 1))["ids"]
            with engine.connect() as conn:
                burst = _spans(conn, done["ids"])
                idle = _spans(conn, idle_ids)
                steps = conn.execute(sa.text("SELECT count(*) FROM dbos.operation_outputs")).scalar_one()
        finally:
            peer.stop()
            engine.dispose()
    trial = _trial(system, number, n * STEPS_PER_RUN, done["started"], done["trigger_s"], burst.spans, idle.latencies)
    # Redis has no part in the peer: its CPU during the trial is someone else's, like any other process.
    cpu_used["other"] = cpu_used.get("other", 0.0) + cpu_used.pop("redis", 0.0)
    cpu_used["dbos"] = cpu_used.pop("workers", 0.0)
    _add_cpu(trial, cpu_used)
    trial.extra.update(
        {
            "mode": mode,
            "dbos": version(),
            "worker_concurrency": settings.workers * settings.concurrency if mode == "queue" else None,
            "queue_polling_s": queue_polling_s if mode == "queue" else None,
            "steps_recorded": int(steps),
            "runs_not_fulfilled": burst.not_fulfilled + idle.not_fulfilled,
        }
    )
    return trial


class _Spans:
    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.not_fulfilled = 0

    @property
    def latencies(self) -> list[float]:
        return [e - s for s, e in self.spans]


def _spans(conn: sa.Connection, ids: list[str]) -> _Spans:
    """(created, completed) in epoch seconds of each workflow, from DBOS's own ``workflow_status`` rows."""
    rows = conn.execute(
        sa.text(
            "SELECT s.workflow_uuid, s.status, o.output, s.created_at, COALESCE(s.completed_at, s.updated_at) "
            "FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid) "
            "WHERE s.workflow_uuid = ANY(:ids)"
        ),
        {"ids": ids},
    ).all()
    result = _Spans()
    found = {r[0] for r in rows}
    result.not_fulfilled = len(set(ids) - found)
    for _, status, output, created, completed in rows:
        result.spans.append((created / 1000, completed / 1000))
        result.not_fulfilled += status != "SUCCESS" or output != FULFILLED_OUTPUT
    return result


def phases(queue_polling_s: float) -> list[Callable[[Settings, int, str, Path], Trial]]:
    return [partial(run_dbos_trial, mode=mode, queue_polling_s=queue_polling_s) for mode in MODES]


def describe(settings: Settings, queue_polling_s: float) -> str:
    return (
        f"          (c) DBOS Transact {version()}: 3 @DBOS.step per workflow, one DBOS process, fresh database "
        f"wfc_bench_dbos_*; dbos-inproc: DBOS.start_workflow x {settings.runs}; dbos-queue: enqueue x "
        f"{settings.runs}, worker_concurrency {settings.workers * settings.concurrency}, "
        f"polling_interval_sec {queue_polling_s:g}"
    )


def summarise(trials: list[Trial]) -> dict[str, Any]:
    """Medians per DBOS mode, and how our workflow's trials compare with each mode's in the same round.

    ``workflow_over_peer`` holds the ratios of our throughput to the peer's
    (the median of the rounds' ratios, each between a workflow trial and the
    peer trial of the same round, so a drift of the machine's speed during
    the run cancels out) and of our CPU per item to the peer's (each the sum
    of its roles' medians, as the table shows them).
    """
    summary: dict[str, Any] = {}
    ours = {t.trial: t for t in trials if t.system == "workflow"}
    for system in SYSTEMS:
        mine = [t for t in trials if t.system == system]
        if not mine:
            continue
        entry: dict[str, Any] = {
            key: median_or_none([getattr(t, key) for t in mine])
            for key in ("throughput", "latency_p50_s", "latency_p99_s", "idle_latency_p50_s", "idle_latency_p99_s")
        }
        entry["trials"] = len(mine)
        entry["throughput_range"] = [min(t.throughput for t in mine), max(t.throughput for t in mine)]
        roles = sorted({role for t in mine for role in t.extra.get("cpu_ms_per_item", {})})
        entry["cpu_ms_per_item"] = {
            role: median_or_none([t.extra.get("cpu_ms_per_item", {}).get(role) for t in mine]) for role in roles
        }
        entry["cpu_ms_per_item_total"] = median_or_none(
            [sum(t.extra.get("cpu_ms_per_item", {}).values()) for t in mine]
        )
        entry["noisy_trials"] = sum(t.extra.get("other_load", 0.0) > 0.10 for t in mine)
        pairs = [ours[t.trial].throughput / t.throughput for t in mine if t.trial in ours and t.throughput]
        # As the table shows them: the sum of each role's median.
        our_cpu = _cpu_total(list(ours.values()))
        peer_cpu = sum(v for v in entry["cpu_ms_per_item"].values() if v)
        entry["workflow_over_peer"] = {
            "throughput_pairs": pairs,
            "throughput": median_or_none(list(pairs)),
            "cpu_ms_per_item": None if not (our_cpu and peer_cpu) else our_cpu / peer_cpu,
        }
        summary[system] = entry
    return summary


def _cpu_total(trials: list[Trial]) -> float:
    roles = {role for t in trials for role in t.extra.get("cpu_ms_per_item", {})}
    medians = [median_or_none([t.extra.get("cpu_ms_per_item", {}).get(role) for t in trials]) for role in roles]
    return sum(m for m in medians if m)


def _times(entry: dict[str, Any], key: str) -> str:
    value = entry.get("workflow_over_peer", {}).get(key)
    return "-" if value is None else f"{value:.2f}"


def _pairs(entry: dict[str, Any]) -> str:
    return " ".join(f"{r:.2f}" for r in entry.get("workflow_over_peer", {}).get("throughput_pairs", [])) or "-"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def print_table(ours: dict[str, Any], peer: dict[str, Any], noisy: dict[str, int]) -> None:
    """Our workflow beside the two DBOS modes: items are transitions (ours) and steps (DBOS)."""
    columns: list[tuple[str, str, dict[str, Any]]] = [("(b) workflow-celery", "workflow", ours)]
    columns += [(f"(c) {s}", s, peer[s]) for s in SYSTEMS if s in peer]

    def total(entry: dict[str, Any]) -> str:
        return f"{sum(v for v in entry['cpu_ms_per_item'].values() if v):.2f}"

    rows: list[tuple[str, ...]] = [
        ("throughput (transitions or steps/s)", *(f"{e['throughput']:.1f}" for _, _, e in columns)),
        ("throughput range over trials", *("{:.0f} - {:.0f}".format(*e["throughput_range"]) for _, _, e in columns)),
        ("latency p50 under load (ms)", *(_ms(e["latency_p50_s"]) for _, _, e in columns)),
        ("latency p99 under load (ms)", *(_ms(e["latency_p99_s"]) for _, _, e in columns)),
        ("latency p50 idle (ms)", *(_ms(e["idle_latency_p50_s"]) for _, _, e in columns)),
        ("CPU ms per item (all roles)", *(total(e) for _, _, e in columns)),
        ("noisy trials (other load > 10%)", *(f"{noisy.get(s, 0)} of {e['trials']}" for _, s, e in columns)),
        ("(b)/(c) throughput, median of rounds", "", *(_times(e, "throughput") for _, _, e in columns[1:])),
        ("(b)/(c) throughput, each round", "", *(_pairs(e) for _, _, e in columns[1:])),
        ("(b)/(c) CPU per item", "", *(_times(e, "cpu_ms_per_item") for _, _, e in columns[1:])),
    ]
    header = ("median of trials", *(name for name, _, _ in columns))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(line)
    for system in SYSTEMS:
        if system in peer:
            cpu_roles = peer[system]["cpu_ms_per_item"]
            print(
                f"CPU ms per step, {system + ':':<12} "
                + ", ".join(f"{k} {v:.2f}" for k, v in cpu_roles.items() if v is not None)
            )


# --------------------------------------------------------------------------- the DBOS process


def _child(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dbos_peer")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--idle-samples", type=int, default=0)
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument("--queue-polling", type=float, default=DEFAULT_QUEUE_POLLING_S)
    args = p.parse_args(argv)

    # The protocol keeps the real stdout; anything else printed (DBOS's console logging included) goes to the log.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(**message: Any) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    from dbos import DBOS, DBOSConfig, WorkflowHandle

    @DBOS.step()
    def validate(order: dict[str, Any]) -> str:
        if not order["items"] or order["total"] <= 0:
            return "rejected"
        return "validated"

    @DBOS.step()
    def pay(workflow_id: str) -> str:
        return f"ch_{workflow_id[:8]}"

    @DBOS.step()
    def fulfil(order: dict[str, Any]) -> str:
        return f"trk_{order['id']}"

    @DBOS.workflow()
    def order_workflow(order: dict[str, Any]) -> str:
        if validate(order) == "rejected":
            return "rejected"
        order["charge_id"] = pay(DBOS.workflow_id or "")
        order["tracking_number"] = fulfil(order)
        return "fulfilled"

    config: DBOSConfig = {
        "name": "wfc-bench-dbos",
        "system_database_url": args.db_url,
        "application_version": "bench",
        "executor_id": f"bench-{os.getpid()}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    try:
        DBOS.launch()
        queue_thread = f"queue-worker-{QUEUE_NAME}"
        if args.mode == "queue":
            DBOS.register_queue(
                QUEUE_NAME, worker_concurrency=args.worker_concurrency, polling_interval_sec=args.queue_polling
            )
            # The queue manager picks up a registered queue within a second: wait for its worker thread, as
            # the Celery phases wait for their workers to consume.
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not any(t.name == queue_thread for t in threading.enumerate()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no thread {queue_thread} after {READY_TIMEOUT_S:.0f}s")
                time.sleep(0.05)

        def start(i: str) -> WorkflowHandle[str]:
            order = {"id": i, "items": ["book"], "total": 10.0}
            if args.mode == "queue":
                return DBOS.enqueue_workflow(QUEUE_NAME, order_workflow, order)
            return DBOS.start_workflow(order_workflow, order)

        reply(event="ready")
        for command in sys.stdin:
            command = command.strip()
            if command == "go":
                started = time.time()
                handles = [start(f"o{i}") for i in range(args.runs)]
                trigger_s = time.time() - started
                ids = [h.get_workflow_id() for h in handles]
                if args.mode == "queue":
                    _wait_queue(args.db_url, args.runs)
                else:
                    for h in handles:
                        h.get_result()
                reply(event="done", started=started, trigger_s=trigger_s, ids=ids)
            elif command == "idle":
                idle_ids = []
                for i in range(args.idle_samples):
                    # One at a time: a workflow on an idle process, with no backlog in front of it.
                    h = start(f"i{i}")
                    h.get_result(polling_interval_sec=0.005)
                    idle_ids.append(h.get_workflow_id())
                reply(event="idle", ids=idle_ids)
            elif command == "exit":
                break
    finally:
        DBOS.destroy()
    return 0


def _wait_queue(db_url: str, runs: int) -> None:
    """Until ``runs`` workflows of the queue have finished: one count every 0.1 s, as the workflow phase polls."""
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    query = sa.text(
        "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = :q AND NOT (status = ANY(:unfinished))"
    )
    try:
        with engine.connect() as conn:
            while int(conn.execute(query, {"q": QUEUE_NAME, "unfinished": list(UNFINISHED)}).scalar_one()) < runs:
                conn.rollback()
                time.sleep(0.1)
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
