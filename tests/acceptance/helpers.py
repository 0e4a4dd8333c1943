"""Shared by the acceptance tests: a client-side app and waiting for runs."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

from celery import Celery

from workflow_celery import Workflow


class BuildOptions(TypedDict, total=False):
    """The options the acceptance apps pass to ``Builder.build`` (see ``WorkflowOptions``)."""

    err_backoff: timedelta
    max_backoff: timedelta
    pause_after_err_count: int
    redeliver_after: timedelta
    max_redeliver_interval: timedelta
    relay_interval: timedelta
    auto_resume_after: timedelta | None
    hook_err_backoff: timedelta
    hook_max_backoff: timedelta
    max_retry_countdown: timedelta
    publish_timeout: timedelta


def client_app(broker_url: str) -> Celery:
    """The application side (a web view, a script): publishes, never consumes."""
    app = Celery("client")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url
    return app


def wait_all_finished(wf: Workflow[Any, Any], run_ids: list[str], timeout: float) -> float:
    start = time.monotonic()
    pending = set(run_ids)
    while pending and time.monotonic() - start < timeout:
        pending = {r for r in pending if not wf.store.lookup(r).run_state.finished}
        if pending:
            time.sleep(0.2)
    assert not pending, f"{len(pending)} of {len(run_ids)} runs not finished after {timeout}s"
    return time.monotonic() - start


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def marks(directory: Path, kind: str, run_id: str) -> list[dict[str, Any]]:
    path = directory / f"{kind}.{run_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
