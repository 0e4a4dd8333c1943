"""The order workflow end to end with no server: SQLite, the in-process broker, two workers.

    python -m examples.demo [--orders N] [--database sqlite:///orders.db]

Prints every transition as it is committed, then a summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from examples.notifications import Notifications
from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import InProcessBroker, RunState, SQLStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5, help="how many orders to trigger (default 5)")
    parser.add_argument("--database", help="SQLAlchemy URL (default: a new SQLite file in a temp directory)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    url = args.database or f"sqlite:///{Path(tempfile.mkdtemp(prefix='workflow-demo-')) / 'orders.db'}"
    store = SQLStore(url)
    store.create_schema()
    broker = InProcessBroker()
    notifications = Notifications(url)
    wf = order_workflow(notifications).build(broker, store)
    print(f"workflow {wf.name}: statuses {', '.join(s.name for s in OrderStatus if s)}; database {url}")
    print(f"queues: {', '.join(wf.queues())}\n")

    broker.start(workers=2)
    runs: dict[str, str] = {}
    for i in range(1, args.orders + 1):
        # Every fifth order is empty, so the validate step rejects it.
        items = [] if i % 5 == 0 else [f"sku-{i}", f"sku-{i + 100}"]
        order = Order(id=f"order-{i}", items=items, total=12.5 * len(items))
        runs[wf.trigger(order.id, initial_value=order)] = order.id

    printed: dict[str, int] = dict.fromkeys(runs, 0)
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            for run_id, foreign_id in runs.items():
                history = store.history(run_id)
                for entry in history[printed[run_id] :]:
                    label = OrderStatus(entry.status).name
                    print(f"{foreign_id:>10}  v{entry.version}  {label:<10} {entry.run_state.name}")
                printed[run_id] = len(history)
            if all(wf.lookup(r).run_state.finished for r in runs) and not store.outbox():
                break  # every run finished and every hook ran
            time.sleep(0.05)
    finally:
        broker.stop()

    print()
    failed = 0
    for run_id, foreign_id in runs.items():
        rec = wf.lookup(run_id)
        ok = rec.run_state == RunState.COMPLETED
        failed += not ok
        print(
            f"{foreign_id:>10}  {rec.status.name:<10} {rec.run_state.name:<10} "
            f"charge={rec.object.charge_id} tracking={rec.object.tracking_number}"
        )
    print("\nsent by the on_complete hook:")
    for n in sorted(notifications.all(), key=lambda n: n["foreign_id"]):
        print(f"{n['foreign_id']:>10}  {n['kind']:<13} {n['detail']}")
    print(f"\n{len(runs) - failed} of {len(runs)} runs completed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
