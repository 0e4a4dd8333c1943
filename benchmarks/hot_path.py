"""The library's own cost per transition, without Celery: the engine and the store on PostgreSQL.

    .venv/bin/python -m benchmarks.hot_path                  # 3000 runs of the order workflow
    .venv/bin/python -m benchmarks.hot_path --profile        # and where the time goes (cProfile)

Triggers N runs of ``examples.order_processing`` on a fresh PostgreSQL
database with a dispatcher that only collects the doorbells, then answers
every doorbell in this process through the same handlers a Celery worker
calls (``Workflow.routes()``): claim, step, compare-and-set, plan the next
doorbell. Prints wall and CPU time of this process per transition, and the
CPU the PostgreSQL server's processes used meanwhile (read from /proc; the
whole server, so run it on a quiet machine; other processes' share is printed). What a Celery hop adds on top is
measured by ``benchmarks.run`` and ``benchmarks.profile_worker``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
import time
from collections.abc import Sequence

from benchmarks import cpu
from benchmarks.environment import DEFAULT_PG_ADMIN_URL, fresh_database
from examples.order_processing import Order, order_workflow
from workflow_celery import InProcessBroker, SQLStore
from workflow_celery.core.ports import OutboxMessage


class Collect:
    """A dispatcher that keeps the doorbells for this process to answer."""

    def __init__(self) -> None:
        self.pending: collections.deque[OutboxMessage] = collections.deque()

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        self.pending.extend(messages)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3000)
    p.add_argument("--profile", action="store_true", help="print the top functions by own time (cProfile)")
    p.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = p.parse_args(argv)
    with fresh_database(args.pg_admin_url, "hotpath") as url:
        store = SQLStore(url)
        store.create_schema()
        wf = order_workflow().build(InProcessBroker(), store)
        collect = Collect()
        # The doorbells go to this process only: the in-process broker is never started or drained.
        wf.dispatcher = collect
        wf.transitions.dispatcher = collect
        routes = wf.routes()
        for i in range(args.runs):
            wf.trigger(f"order-{i}", initial_value=Order(id=f"order-{i}", items=["book"], total=1.0))
        profile = cProfile.Profile() if args.profile else None
        before, wall, own = cpu.snapshot(()), time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        answered = 0
        while collect.pending:
            message = collect.pending.popleft()
            routes[message.queue](dict(message.body))
            answered += 1
        if profile is not None:
            profile.disable()
        wall, own = time.perf_counter() - wall, time.process_time() - own
        used = cpu.used(before, cpu.snapshot(()))
        pg, other = used.get("postgresql", 0.0), used.get("other", 0.0)
        store.dispose()
    per = 1000.0 / max(answered, 1)
    print(f"{answered} doorbells answered ({args.runs} runs); per transition:")
    print(f"  wall {wall * per:.3f} ms, CPU of this process {own * per:.3f} ms, PostgreSQL CPU {pg * per:.3f} ms")
    print(f"  other processes used {other / max(wall, 1e-9) / 2 * 100:.0f}% of a 2-CPU machine meanwhile")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
