"""CPU time by role (workers, PostgreSQL, Redis, this driver), read from /proc.

On a two-core machine the systems under test, the database and the broker all
share the same CPUs; CPU milliseconds per item tell which of them the
throughput is paying for.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Connection, text

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read_stat(pid_dir: Path) -> tuple[str, int, float] | None:
    """(command name, process group, CPU seconds) of one process, or None if it is gone."""
    try:
        raw = (pid_dir / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    pgrp = int(fields[2])
    utime, stime = int(fields[11]), int(fields[12])
    return comm, pgrp, (utime + stime) / _TICKS


def machine_busy() -> float:
    """CPU seconds spent by every process on the machine so far, summed over all CPUs."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal. Interrupt time is left out: it is mostly
    # the loopback traffic of the benchmark itself, which no process is billed for. Steal (the
    # hypervisor running someone else) stays in: it is exactly the kind of noise to report.
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields[:8]
    busy = user + nice + system + steal
    return busy / _TICKS


MACHINE = -1
"""Key of the whole machine's busy time in a snapshot."""


def snapshot(worker_groups: Iterable[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process that plays a role, by pid, with its role.

    The whole machine's busy time is stored under ``MACHINE``; what is not
    accounted to a role is reported as ``other`` (someone else's load: noise).
    """
    groups = set(worker_groups)
    me = os.getpid()
    result: dict[int, tuple[str, float]] = {MACHINE: ("machine", machine_busy())}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        stat = _read_stat(pid_dir)
        if stat is None:
            continue
        comm, pgrp, seconds = stat
        pid = int(pid_dir.name)
        if pgrp in groups:
            role = "workers"
        elif comm == "postgres" or comm.startswith("postgres:"):
            role = "postgresql"
        elif comm.startswith("redis-server"):
            role = "redis"
        elif pid == me:
            role = "driver"
        else:
            continue
        result[pid] = (role, seconds)
    return result


def used(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    postgresql_pids: set[int] | None = None,
) -> dict[str, float]:
    """CPU seconds used between two snapshots, by role (a process born in between counts from zero).

    ``postgresql_pids`` keeps only those PostgreSQL processes (the benchmark's
    own backends and the server's background processes), so that other
    databases on the same server are not billed to the benchmark.
    """
    total: defaultdict[str, float] = defaultdict(float)
    for pid, (role, seconds) in after.items():
        if role == "postgresql" and postgresql_pids is not None and pid not in postgresql_pids:
            continue
        total[role] += seconds - before.get(pid, (role, 0.0))[1]
    machine = total.pop("machine", 0.0)
    total["other"] = max(machine - sum(total.values()), 0.0)
    return dict(total)


def postgresql_pids(conn: Connection) -> set[int]:
    """Server processes serving the connection's database, plus the background ones (WAL writer, checkpointer...)."""
    rows = conn.execute(
        text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type <> 'client backend'")
    )
    return {int(r[0]) for r in rows}
