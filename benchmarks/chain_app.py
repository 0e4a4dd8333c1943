"""The baseline: a bare Celery chain of three tasks, each enqueuing the next.

    celery -A benchmarks.chain_app worker -Q 'bench-chain.hop1,bench-chain.hop2,bench-chain.hop3'

It is configured exactly like a workflow worker (``celeryconfig``: JSON,
``acks_late``, prefetch 1, ignored results) and publishes the same way the
workflow dispatcher does (``send_task`` on a pooled producer, one queue per
hop), but keeps no state anywhere: it is what Celery alone costs per hop.
The last hop pushes ``"<trigger time> <end time>"`` to a Redis list.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

import celeryconfig
from benchmarks.worker_hooks import apply_overrides  # importing it registers the readiness signal

HOPS = 3
QUEUES = [f"bench-chain.hop{i}" for i in range(1, HOPS + 1)]
DONE_KEY = "bench-chain:done"

app = Celery("bench-chain")
app.config_from_object("celeryconfig")
apply_overrides(app)

_redis: redis.Redis | None = None


def _done_list() -> redis.Redis:
    # Created lazily so that each prefork child opens its own connection.
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ.get("CELERY_BROKER_URL", celeryconfig.broker_url))
    return _redis


def send_hop(hop: int, chain_id: str, trigger_ts: float, done_key: str, producer: Any = None) -> None:
    """Publish hop ``hop`` of a chain, with the options the workflow dispatcher uses."""
    queue = QUEUES[hop - 1]
    app.send_task(
        queue,
        kwargs={"chain_id": chain_id, "hop": hop, "trigger_ts": trigger_ts, "done_key": done_key},
        queue=queue,
        task_id=f"{chain_id}.{hop}",
        producer=producer,
        serializer="json",
        ignore_result=True,
    )


def _hop(chain_id: str, hop: int, trigger_ts: float, done_key: str) -> str:
    if hop < HOPS:
        with app.producer_or_acquire() as producer:
            send_hop(hop + 1, chain_id, trigger_ts, done_key, producer)
        return "moved"
    _done_list().rpush(done_key, f"{trigger_ts!r} {time.time()!r}")
    return "completed"


for _queue in QUEUES:
    # The same task options the workflow adapter gives its step tasks.
    app.task(
        name=_queue,
        queue=_queue,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        typing=False,
        serializer="json",
    )(_hop)
