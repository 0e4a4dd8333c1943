"""The workflow side: the example order workflow (three steps) on Celery and PostgreSQL.

    celery -A benchmarks.flow_app worker -Q 'order-processing.*'

The same as ``examples.orders`` (``order_workflow()`` built on a Celery app
configured from ``celeryconfig``) plus what the benchmark needs to observe it:

- ``BENCH_REDELIVER_AFTER`` (seconds): the workflow's ``redeliver_after``
  (default: the library's own default);
- ``BENCH_STATS_DIR``: count the outcome of every step message per process
  (how many were duplicates) and, with ``BENCH_TIMINGS=1``, time the parts of
  a transition (store lookup and compare-and-set, publish, object codec);
- ``BENCH_TASK_EVENTS``: override ``worker_send_task_events`` (tuning runs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from celery import Celery

import celeryconfig
from benchmarks.worker_hooks import apply_overrides, stats
from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import SQLStore

F = TypeVar("F", bound=Callable[..., Any])

app = Celery("bench-flow")
app.config_from_object("celeryconfig")
apply_overrides(app)

store = SQLStore(celeryconfig.workflow_database_url)
_options: dict[str, Any] = {}
if os.environ.get("BENCH_REDELIVER_AFTER"):
    _options["redeliver_after"] = timedelta(seconds=float(os.environ["BENCH_REDELIVER_AFTER"]))
wf = order_workflow().build(app, store, **_options)


def _timed(name: str, fn: F) -> F:
    """``fn`` recording its wall time under ``name`` and its CPU time under ``name.cpu``.

    Wall minus CPU is time spent waiting: on PostgreSQL's answer (and its WAL
    flush) for the store, on Redis for a publish. Thread CPU time leaves out
    the relay thread, which runs beside the tasks in the worker's main process.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            stats().add(f"{name}.cpu", time.thread_time() - start_cpu, count=0)
            stats().add(name, time.perf_counter() - start)

    return wrapper  # type: ignore[return-value]


def _instrument() -> None:
    # The step tasks call ``wf.engine.handle_step`` through the instance and the engine
    # reaches the store, dispatcher and codec through attributes, so wrapping the
    # bound methods on these instances observes the real hot path unchanged.
    handle_step = wf.engine.handle_step
    relay_once = wf.relay_once

    def counting_handle_step(status: int, body: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.thread_time()
        answer = handle_step(status, body)
        stats().add("handle_step.cpu", time.thread_time() - start_cpu, count=0)
        stats().add(f"outcome.{answer.outcome.value}", time.perf_counter() - start)
        return answer

    def counting_relay_once(*args: Any, **kwargs: Any) -> int:
        sent = relay_once(*args, **kwargs)
        if sent:
            stats().add("relay.published", count=sent)
        return sent

    wf.engine.handle_step = counting_handle_step  # type: ignore[method-assign]
    wf.relay_once = counting_relay_once  # type: ignore[method-assign]
    if os.environ.get("BENCH_TIMINGS") == "1":
        store.claim = _timed("store.claim", store.claim)  # type: ignore[method-assign]
        store.update_run = _timed("store.update_run", store.update_run)  # type: ignore[method-assign]
        wf.dispatcher.publish = _timed("dispatcher.publish", wf.dispatcher.publish)  # type: ignore[method-assign]
        wf.codec.decode = _timed("codec.decode", wf.codec.decode)  # type: ignore[method-assign]
        wf.codec.encode = _timed("codec.encode", wf.codec.encode)  # type: ignore[method-assign]


if stats().enabled:
    _instrument()

__all__ = ["Order", "OrderStatus", "app", "store", "wf"]
