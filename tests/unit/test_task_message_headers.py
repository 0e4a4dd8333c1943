"""The headers Celery reads after receipt are checked at receipt (``task_messages``)."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_celery.adapters.celery.task_messages import task_message_problem

QUEUE = "order-processing.created"


class Message:
    def __init__(self, headers: dict[str, Any], payload: Any, properties: dict[str, Any] | None = None) -> None:
        self.headers = headers
        self.payload = payload
        self.properties = properties or {}


def celery_headers(**changes: Any) -> dict[str, Any]:
    """The headers ``as_task_v2`` writes."""
    headers = {
        "lang": "py",
        "task": QUEUE,
        "id": "t-1",
        "shadow": None,
        "eta": "2030-01-01T00:00:00+00:00",
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": "t-1",
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "gen1@host",
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": ["tenant"],
        "stamps": {"tenant": "a"},
    }
    return {**headers, **changes}


BODY = [[], {"run_id": "r"}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_a_message_celery_made_passes() -> None:
    assert task_message_problem(Message(celery_headers(), BODY, {"correlation_id": "t-1", "reply_to": ""})) is None
    assert task_message_problem(Message(celery_headers(timelimit=[300, 240.5]), BODY)) is None


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("stamped_headers", 5, "header 'stamped_headers' must be a list of strings, got 5"),
        ("stamps", [1], "header 'stamps' must be an object"),
        ("timelimit", "soon", "header 'timelimit' must be [hard, soft] seconds"),
        ("timelimit", [1, "a"], "header 'timelimit' must be [hard, soft] seconds"),
        ("timelimit", [-1, None], "header 'timelimit' must be [hard, soft] seconds"),
        ("eta", "tomorrow", "invalid ETA value 'tomorrow'"),
        ("expires", 17, "invalid expires value 17"),
        ("retries", "1", "header 'retries' must be a whole number"),
        ("retries", None, "header 'retries' must be a whole number"),
        ("root_id", ["r"], "header 'root_id' must be a string"),
        ("parent_id", 3, "header 'parent_id' must be a string"),
        ("group", {}, "header 'group' must be a string"),
        ("argsrepr", {"a": 1}, "header 'argsrepr' must be a string"),
        ("kwargsrepr", 1, "header 'kwargsrepr' must be a string"),
        ("ignore_result", "yes", "header 'ignore_result' must be true, false or null"),
        ("origin", 5, "header 'origin' must be a string"),
        ("id", ["x"], "header 'id' must be a non-empty string"),
    ],
)
def test_a_header_celery_would_fail_on_later_is_named(header: str, value: Any, reason: str) -> None:
    problem = task_message_problem(Message(celery_headers(**{header: value}), BODY))
    assert problem is not None and reason in problem


def test_the_body_and_properties_are_checked() -> None:
    assert task_message_problem(Message(celery_headers(), [[], {}, 5])) == "the body's embed must be an object, got 5"
    assert "args must be a list" in str(task_message_problem(Message(celery_headers(), ["a", {}, {}])))
    assert "must be [args, kwargs, embed]" in str(task_message_problem(Message(celery_headers(), "abc")))
    problem = task_message_problem(Message(celery_headers(), BODY, {"priority": "high"}))
    assert problem is not None and "property 'priority'" in problem


def test_a_protocol_1_message_is_checked_in_its_body() -> None:
    body = {"task": QUEUE, "id": "t-1", "args": [], "kwargs": {}, "timelimit": "x"}
    problem = task_message_problem(Message({}, body))
    assert problem is not None and "field 'timelimit'" in problem
    assert task_message_problem(Message({}, {**body, "timelimit": [None, None]})) is None


def test_what_celery_refuses_itself_is_left_to_it() -> None:
    class Undecodable:
        headers = celery_headers()
        properties: dict[str, Any] = {}

        @property
        def payload(self) -> Any:
            raise ValueError("cannot decode")

    assert task_message_problem(Undecodable()) is None
    assert task_message_problem(Message(celery_headers(), "hello")) is None  # Celery: ValueError at receipt
