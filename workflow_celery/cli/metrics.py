"""``workflow-celery metrics``: the run gauges of the app's workflows, read from their databases.

workflow-celery -A examples.orders metrics --port 9187 [--addr 127.0.0.1]   # serve /metrics until stopped
workflow-celery -A examples.orders metrics --once                           # print them once

For a Prometheus that should not scrape workers, or a host that runs none.
The process counters (latency, errors, run-state changes) are the workers'
own: see ``WORKFLOW_CELERY_METRICS_PORT`` in docs/workers.md.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from ..adapters.prometheus import DatabaseCollector
from .common import CliError, find_workflows, positive


def add_commands(sub: Any) -> None:
    """Add ``metrics`` to the command's sub-parsers."""
    m = sub.add_parser("metrics", help="serve (or print) the run gauges read from the database")
    how = m.add_mutually_exclusive_group(required=True)
    how.add_argument("--port", type=positive, help="serve /metrics on this port until stopped")
    how.add_argument("--once", action="store_true", help="print the metrics once, in Prometheus' text format")
    m.add_argument("--addr", default="127.0.0.1", help="the address to serve on (default 127.0.0.1)")
    m.set_defaults(func=cmd_metrics, needs_app=True)


def cmd_metrics(args: argparse.Namespace) -> int:
    workflows = list(find_workflows(args.app).values())
    if not workflows:
        raise CliError("the app builds no workflow")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(workflows))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    try:
        start_http_server(args.port, addr=args.addr, registry=registry)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CliError(f"cannot serve on {args.addr}:{args.port} (--addr, --port): {reason}") from None
    print(f"serving the metrics of {len(workflows)} workflow(s) on http://{args.addr}:{args.port}/metrics", flush=True)
    threading.Event().wait()
    return 0
