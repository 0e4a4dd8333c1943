"""What a task message must look like before a worker takes it: every header Celery reads after receipt.

Celery reads a task message's headers when it receives it (``Request``), but
uses many only later: the stamps when it checks whether the task was revoked,
just before handing it to the pool (from a timer for an ETA, from the event
loop when the pool was busy); the time limits in the pool; the retry count in
``Task.retry``. A header of the wrong type there raises outside any handler:
``Error in timer`` leaves the message unacknowledged and a pool slot taken
forever, ``Unrecoverable error`` stops the worker. The consumer checks them
here, at receipt, and keeps a message that fails as a dead letter.

The checks follow what Celery itself sends (``celery.app.amqp``
``as_task_v2``/``as_task_v1``) and how ``celery.worker.request`` and
``celery.worker.strategy`` use each value; a message Celery made passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from celery.utils.time import maybe_iso8601, maybe_make_aware

__all__ = ["task_message_problem"]


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "must be a string"


def _count(value: Any) -> str | None:
    if value is None or (type(value) is int and value >= 0):
        return None
    return "must be a whole number, at least 0"


def _retries(value: Any) -> str | None:
    # ``Task.retry`` adds one to it: None would fail there.
    return None if type(value) is int and value >= 0 else "must be a whole number, at least 0"


def _flag(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "must be true, false or null"


def _seconds(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def _time_limits(value: Any) -> str | None:
    if value is None or (isinstance(value, list | tuple) and not value):
        return None
    if isinstance(value, list | tuple) and len(value) == 2 and all(_seconds(v) for v in value):
        return None
    return "must be [hard, soft] seconds (numbers at least 0, or null)"


def _names(value: Any) -> str | None:
    if value is None or (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)):
        return None
    return "must be a list of strings"


def _mapping(value: Any) -> str | None:
    if value is None or (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
        return None
    return "must be an object"


def _time(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parsed = maybe_iso8601(value)
        if parsed is None:
            return None
        if not isinstance(parsed, datetime):
            return "must be an ISO 8601 time"
        # The worker turns it into a timestamp in its own time zone (an ETA) or compares it with now (expires).
        maybe_make_aware(parsed).timestamp()
    except (AttributeError, ValueError, TypeError, OverflowError) as exc:
        return f"must be an ISO 8601 time: {exc}"
    return None


def _priority(value: Any) -> str | None:
    return None if value is None or (type(value) is int and 0 <= value <= 255) else "must be a number from 0 to 255"


HEADERS: dict[str, Callable[[Any], str | None]] = {
    "id": lambda v: None if isinstance(v, str) and v else "must be a non-empty string",
    "shadow": _text,
    "lang": _text,
    "root_id": _text,
    "parent_id": _text,
    "group": _text,
    "origin": _text,
    "argsrepr": _text,
    "kwargsrepr": _text,
    "eta": _time,
    "expires": _time,
    "retries": _retries,
    "timelimit": _time_limits,
    "group_index": _count,
    "replaced_task_nesting": _count,
    "ignore_result": _flag,
    "stamped_headers": _names,
    "stamps": _mapping,
    "groups": _names,
}
"""Header name: a check returning what is wrong with its value, or None."""

PROPERTIES: dict[str, Callable[[Any], str | None]] = {
    "correlation_id": _text,
    "reply_to": _text,
    "priority": _priority,
}

EMBED: dict[str, Callable[[Any], str | None]] = {
    "callbacks": lambda v: None if v is None or isinstance(v, list | tuple) else "must be a list",
    "errbacks": lambda v: None if v is None or isinstance(v, list | tuple) else "must be a list",
    "chain": lambda v: None if v is None or isinstance(v, list | tuple) else "must be a list",
    "chord": _mapping,
}


def _check(kind: str, values: Mapping[str, Any], checks: Mapping[str, Callable[[Any], str | None]]) -> str | None:
    for name, check in checks.items():
        if name in values:
            value = values[name]
            problem = check(value)
            if problem is not None and name in _CELERY_WORDS:
                # As Celery words it when it can parse no time at all.
                return f"invalid {_CELERY_WORDS[name]} value {_short(value)}: {kind} {name!r} {problem}"
            if problem is not None:
                return f"{kind} {name!r} {problem}, got {_short(value)}"
    return None


_CELERY_WORDS = {"eta": "ETA", "expires": "expires"}


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


def _body_problem(body: Any) -> str | None:
    """The protocol 2 body, ``[args, kwargs, embed]``."""
    if not isinstance(body, list | tuple):
        try:
            _, _, _ = body
        except Exception:
            return None  # Celery refuses it at receipt, and the consumer keeps it with Celery's own words
        return f"the body must be [args, kwargs, embed], got {type(body).__name__}"
    if len(body) != 3:
        return None  # as above
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return f"the task's args must be a list, got {_short(args)}"
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        return f"the task's kwargs must be an object, got {_short(kwargs)}"
    if embed is None:
        return None
    if not isinstance(embed, Mapping):
        return f"the body's embed must be an object, got {_short(embed)}"
    return _check("embed", embed, EMBED)


def task_message_problem(message: Any) -> str | None:
    """What is wrong with a task message's headers, properties or body, as one line; None when nothing is.

    Only looks at what Celery would take as a task message of a known task:
    anything else (no task header, a body that cannot be decoded) is left to
    the consumer's own handling, which keeps it with Celery's words.
    """
    headers = getattr(message, "headers", None)
    if not isinstance(headers, Mapping):
        return None
    try:
        payload = message.payload
    except Exception:
        return None  # a body that cannot be decoded or is refused: Celery says why
    if isinstance(payload, Mapping) and "args" in payload:
        # Protocol 1 (the fields are in the body), or a hybrid whose headers override the body's.
        effective: Mapping[str, Any] = {**payload, **headers} if "task" in headers else payload
        problem = _check("field", effective, HEADERS)
        if problem is None and not isinstance(payload.get("args"), list | tuple):
            problem = f"the task's args must be a list, got {_short(payload.get('args'))}"
        if problem is None and not isinstance(payload.get("kwargs", {}), Mapping):
            problem = f"the task's kwargs must be an object, got {_short(payload.get('kwargs'))}"
    else:
        problem = _check("header", headers, HEADERS) or _body_problem(payload)
    if problem is None:
        properties = getattr(message, "properties", None)
        if isinstance(properties, Mapping):
            problem = _check("property", properties, PROPERTIES)
    return problem
