"""``-Q 'order-processing.*'``: expand queue patterns against the queues an app declares.

Celery has no wildcard queues: left alone, ``-Q 'dev.*'`` consumes a queue
literally named ``dev.*``. Wherever a worker or a command takes queue names —
``celery worker -Q/-X``, ``celery purge -Q/-X``, ``celery control
add_consumer/cancel_consumer`` — a name containing ``*``, ``?`` or ``[`` is a
shell-style pattern matched against the queues of the app's workflows and
the queues the app declares itself (``task_queues``, the default queue).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from celery import Celery

from ...core.errors import ConfigurationError
from .registry import all_queues

PATTERN_CHARS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    return any(c in PATTERN_CHARS for c in name)


def known_queues(app: Celery) -> list[str]:
    """The queues patterns are matched against: every workflow queue, then the app's own declared queues."""
    names = all_queues(app)
    # Reading ``app.amqp.queues`` builds it from the configuration: only ask once the app is configured.
    names.extend(name for name in app.amqp.queues if not is_pattern(name) and name not in names)
    return names


def expand_queue_patterns(requested: Iterable[str], known: Sequence[str]) -> list[str]:
    """Replace each pattern with the known queues it matches; keep plain names as they are.

    Raises ``ConfigurationError`` listing the known queues when a pattern matches none.
    """
    expanded: list[str] = []
    for item in requested:
        name = item.strip()
        if not name:
            continue
        matches = fnmatch.filter(known, name) if is_pattern(name) else [name]
        if not matches:
            listing = ", ".join(known) if known else "(no queue is declared)"
            raise ConfigurationError(f"queue pattern {name!r} matches no queue of this app; known queues: {listing}")
        expanded.extend(m for m in matches if m not in expanded)
    return expanded


def as_list(value: object) -> list[str]:
    """Queue names as Celery's options carry them: a comma-separated string, a sequence, or nothing."""
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Iterable):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]
