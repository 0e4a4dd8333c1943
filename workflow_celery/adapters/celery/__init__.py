"""Celery adapter: one task and queue per status, queue patterns, dead letters, the outbox relay in every worker.

- ``tasks``: the tasks ``build`` registers, and how an answer becomes a task state;
- ``dispatcher``: doorbells published as task messages;
- ``worker``: what a worker does besides running tasks (queues, limits, relay, claims);
- ``queues``: expanding queue patterns; ``worker_queues``: a worker's ``-Q``/``-X``;
  ``purge``: ``celery purge``'s; ``registry``: the workflows of an app;
- ``consumer``, ``redis_transport``, ``dead_letters``: what cannot be delivered to a task is kept aside.
"""

from __future__ import annotations

from .dispatcher import CeleryDispatcher
from .queues import expand_queue_patterns
from .registry import all_queues, registry
from .tasks import attach_to_celery, report
from .worker import check_time_limits

__all__ = [
    "CeleryDispatcher",
    "all_queues",
    "attach_to_celery",
    "check_time_limits",
    "expand_queue_patterns",
    "registry",
    "report",
]
