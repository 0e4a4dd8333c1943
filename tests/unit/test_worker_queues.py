"""Which queues a worker consumes for each ``-Q``/``-X``, after Celery's own selection (no broker involved)."""

from __future__ import annotations

import pytest
from celery import Celery
from kombu.entity import Queue

from examples.order_processing import order_workflow
from workflow_celery import ConfigurationError, MemoryStore
from workflow_celery.adapters.celery.worker_queues import select_queues

STEPS = ["order-processing.created", "order-processing.validated", "order-processing.paid"]
DELETION = "order-processing.data-deletion"


def worker_app(task_queues: list[str] | None = None) -> Celery:
    app = Celery("unit", broker="memory://", set_as_current=False)
    if task_queues is not None:
        app.conf.task_queues = [Queue(name) for name in task_queues]
    order_workflow().build(app, MemoryStore())
    return app


def selected(app: Celery, q: list[str] | None, x: list[str]) -> list[str]:
    """Celery's WorkController.setup_queues, then ours, as a worker started with ``-Q q -X x`` does."""
    app.amqp.queues.select(q)
    app.amqp.queues.deselect(x)
    return sorted(select_queues(app, q, x))


def test_no_q_consumes_every_workflow_queue_and_celerys_default() -> None:
    app = worker_app()
    assert selected(app, None, []) == sorted(["celery", *STEPS, DELETION])


def test_no_q_keeps_the_apps_own_task_queues() -> None:
    app = worker_app(["emails", "reports"])
    assert selected(app, None, []) == sorted(["emails", "reports", *STEPS, DELETION])


def test_q_patterns_replace_the_queue_celery_made_of_them() -> None:
    app = worker_app()
    assert selected(app, ["order-processing.*"], []) == sorted([*STEPS, DELETION])
    assert "order-processing.*" not in app.amqp.queues


def test_x_takes_the_same_patterns() -> None:
    app = worker_app()
    assert selected(app, ["order-processing.*"], ["*.data-deletion", "order-processing.paid"]) == sorted(
        ["order-processing.created", "order-processing.validated"]
    )
    assert selected(worker_app(), None, ["order-processing.*"]) == ["celery"]


def test_patterns_match_the_apps_own_queues_and_plain_names_stay() -> None:
    app = worker_app(["emails.high", "emails.low", "reports"])
    assert selected(app, ["emails.*", "order-processing.paid", "misc"], []) == [
        "emails.high",
        "emails.low",
        "misc",
        "order-processing.paid",
    ]


@pytest.mark.parametrize(("q", "x"), [(["no-such.*"], []), (["order-processing.*"], ["order-procesing.*"])])
def test_a_pattern_matching_nothing_is_refused(q: list[str], x: list[str]) -> None:
    with pytest.raises(ConfigurationError, match=r"matches no queue of this app; known queues: order-processing"):
        selected(worker_app(), q, x)


def test_leaving_nothing_to_consume_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="leaves no queue to consume"):
        selected(worker_app(), ["order-processing.*"], ["order-processing.*"])
