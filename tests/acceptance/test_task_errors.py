"""Acceptance: whatever a step raises, the worker stays up and Celery shows the attempt's state.

A ``MemoryError`` on the attempt that pauses a run used to stop the worker
(Celery re-raises it in the main process); a 50 MB message was written whole
into every RETRY and FAILURE line; a ``BaseException`` that is not an
``Exception`` was only counted when its claim expired. Workers report their
stats to ``celery inspect stats`` (Flower's worker pages).
"""

from __future__ import annotations

from collections.abc import Callable

from tests.acceptance.conftest import Worker
from tests.acceptance.errorsapp import HUGE, OPTIONS, Job, Stage, builder
from tests.acceptance.helpers import client_app, wait_all_finished, wait_until
from workflow_celery import RunState, SQLStore, Workflow

APP = "tests.acceptance.errorsapp"
QUEUES = "unsafe-errors.*"


def unsafe(broker_url: str, store: SQLStore) -> Workflow[Job, Stage]:
    return builder().build(client_app(broker_url), store, **OPTIONS)


def paused(store: SQLStore, run_id: str) -> bool:
    return store.lookup(run_id).run_state == RunState.PAUSED


def test_a_memory_error_pausing_the_run_leaves_the_worker_running(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker]
) -> None:
    wf = unsafe(broker_url, store)
    worker = start_worker(APP, QUEUES, concurrency=1, env={"WFC_PAUSE_AFTER": "2"})
    run_id = wf.trigger("memory-1", initial_value=Job(raise_="memory"))
    wait_until(lambda: paused(store, run_id), 60, "the run paused after two MemoryErrors")
    [errors] = store.errors(run_id)
    assert errors.count == 2 and errors.last_error.error_type == "builtins.MemoryError"
    # The worker is still there and runs the next run.
    done = wf.trigger("after-memory", initial_value=Job())
    wait_all_finished(wf, [done], timeout=60)
    assert wf.lookup(done).run_state == RunState.COMPLETED
    out = worker.output()
    assert worker.proc.poll() is None, out
    assert "Unrecoverable error" not in out
    assert "retry: Retry in" in out and "StepError('MemoryError: cannot allocate the report buffer')" in out
    assert "raised unexpected: StepError('MemoryError: cannot allocate the report buffer')" in out


def test_a_huge_message_is_not_written_whole_into_the_worker_log(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker]
) -> None:
    wf = unsafe(broker_url, store)
    worker = start_worker(APP, QUEUES, concurrency=1, env={"WFC_PAUSE_AFTER": "2"})
    run_id = wf.trigger("huge-1", initial_value=Job(raise_="huge"))
    wait_until(lambda: paused(store, run_id), 60, "the run paused after two failures")
    wait_until(lambda: "raised unexpected" in worker.output(), 30, "the FAILURE line")
    out = worker.output()
    assert worker.proc.poll() is None, out
    assert len(out) < 1_000_000, f"the worker wrote {len(out)} characters"
    assert "StepError('ValueError: xxxx" in out and "characters cut]" in out
    assert "retry: Retry in" in out  # the first attempt's RETRY line
    [errors] = store.errors(run_id)
    assert errors.last_error.error_type == "builtins.ValueError" and errors.last_error.message.startswith("xxx")
    assert len(errors.last_error.message) < HUGE


def test_a_base_exception_is_counted_at_once_with_its_message(
    broker_url: str, store: SQLStore, start_worker: Callable[..., Worker]
) -> None:
    wf = unsafe(broker_url, store)
    worker = start_worker(APP, QUEUES, concurrency=1, env={"WFC_PAUSE_AFTER": "2"})
    run_id = wf.trigger("base-1", initial_value=Job(raise_="base"))
    # The claim lasts redeliver_after (30 s): a pause within it means the attempts were counted as they failed.
    wait_until(lambda: paused(store, run_id), 20, "the run paused after two failures")
    [errors] = store.errors(run_id)
    assert errors.last_error.error_type == "tests.acceptance.errorsapp.QuotaExhausted"
    assert errors.last_error.message == "monthly quota used up"
    assert "max error retry threshold hit: QuotaExhausted: monthly quota used up" in (
        store.lookup(run_id).meta.run_state_reason
    )
    assert worker.proc.poll() is None, worker.output()


def test_celery_inspect_stats_answers(broker_url: str, store: SQLStore, start_worker: Callable[..., Worker]) -> None:
    worker = start_worker(APP, QUEUES, concurrency=1, name="stats")
    app = client_app(broker_url)
    replies = app.control.inspect(timeout=5).stats() or {}
    assert len(replies) == 1, (replies, worker.output())
    [(node, stats)] = replies.items()
    assert node.startswith("stats@")
    assert stats["pid"] == worker.proc.pid
    broker = stats["broker"]
    assert isinstance(broker, dict) and isinstance(broker["transport"], str), broker
    assert "Control command error" not in worker.output()
