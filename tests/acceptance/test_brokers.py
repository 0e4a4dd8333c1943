"""Acceptance: what a worker checks about its broker before it consumes."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.acceptance.conftest import Worker, rabbitmqctl

# The order example keeps the default max_retry_countdown: a retry may wait 60 s unacknowledged.
MAX_RETRY_COUNTDOWN = 60


def server_consumer_timeout() -> int:
    """The consumer_timeout of the RabbitMQ server the tests use, in whole seconds."""
    answer = rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    found = re.fullmatch(r"\{ok,(\d+)\}", answer)
    if found is None:
        pytest.fail(f"this RabbitMQ server has no consumer_timeout to check against: {answer}")
    return int(found.group(1)) // 1000


@pytest.mark.parametrize("broker", ["rabbitmq"])  # RabbitMQ's own consumer_timeout
def test_a_worker_refuses_a_time_limit_not_below_rabbitmqs_consumer_timeout(
    start_worker: Callable[..., Worker],
) -> None:
    timeout = server_consumer_timeout()  # declared as a deployment would: the server's own value
    limits = {"WORKFLOW_CELERY_CONSUMER_TIMEOUT": str(timeout), "WORKFLOW_CELERY_TASK_SOFT_TIME_LIMIT": "10"}
    too_long = str(timeout - MAX_RETRY_COUNTDOWN)
    refused = start_worker(
        "examples.orders", "order-processing.*", env={**limits, "WORKFLOW_CELERY_TASK_TIME_LIMIT": too_long}, wait=False
    )
    assert refused.proc.wait(60) != 0
    out = refused.output()
    assert (
        f"task_time_limit ({too_long}s) plus max_retry_countdown ({MAX_RETRY_COUNTDOWN}s) must be shorter than "
        f"RabbitMQ's consumer_timeout ({timeout}s, setting workflow_consumer_timeout)"
    ) in out, out
    assert " ready." not in out

    # One second less, and the same worker starts and consumes.
    allowed = str(timeout - MAX_RETRY_COUNTDOWN - 1)
    start_worker("examples.orders", "order-processing.*", env={**limits, "WORKFLOW_CELERY_TASK_TIME_LIMIT": allowed})


@pytest.mark.parametrize("broker", ["redis"])  # Redis' visibility_timeout
def test_a_worker_refuses_a_time_limit_not_below_redis_visibility_timeout(
    start_worker: Callable[..., Worker],
) -> None:
    env = {"WORKFLOW_CELERY_VISIBILITY_TIMEOUT": "600", "WORKFLOW_CELERY_TASK_TIME_LIMIT": "540"}
    refused = start_worker("examples.orders", "order-processing.*", env=env, wait=False)
    assert refused.proc.wait(60) != 0
    out = refused.output()
    assert "must be shorter than broker_transport_options['visibility_timeout'] (600s)" in out, out
