"""``-Q 'order-processing.*'``: expand queue patterns against the queues workflows declare.

Celery has no wildcard queues: left alone, ``-Q 'dev.*'`` consumes a queue
literally named ``dev.*``. Patterns are expanded when the worker starts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from ..core.errors import ConfigurationError

PATTERN_CHARS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    return any(c in PATTERN_CHARS for c in name)


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
            listing = ", ".join(known) if known else "(no workflow is built on this app)"
            raise ConfigurationError(
                f"queue pattern {name!r} matches no queue of this app's workflows; known queues: {listing}"
            )
        expanded.extend(m for m in matches if m not in expanded)
    return expanded
