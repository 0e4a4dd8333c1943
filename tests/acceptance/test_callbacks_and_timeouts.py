"""Acceptance: callbacks through a Flask view and timeouts fired by several real workers on a shared clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.acceptance.conftest import Worker
from tests.acceptance.helpers import client_app, wait_until
from tests.acceptance.otpapp import PAUSE_AFTER_ERR_COUNT, Code, Otp, SharedClock, build, create_app
from workflow_celery import RunState, SQLStore, Workflow


def _client(broker_url: str, store: SQLStore, clock: SharedClock) -> Workflow[Code, Otp]:
    return build(client_app(broker_url), store, clock)


def _timeout_pending(wf: Workflow[Code, Otp], run_id: str) -> bool:
    return any(m.body.get("action") == "timeout" for m in wf.store.outbox(run_id))


def _fired(markers: Path, run_id: str) -> int:
    return len(list(markers.glob(f"{run_id}.*")))


@pytest.mark.parametrize("broker", ["redis"])
def test_a_callback_posted_to_a_flask_view_moves_the_waiting_run_once(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore, tmp_path: Path
) -> None:
    wf = _client(broker_url, store, SharedClock(None))
    start_worker("tests.acceptance.otpapp", "otp.*", concurrency=1)
    run_id = wf.trigger("user-1", initial_value=Code(marker_dir=str(tmp_path)))
    wait_until(lambda: _timeout_pending(wf, run_id), 60, "the run to wait at WAITING with its timeout")
    web = create_app(wf).test_client()

    wrong = web.post("/otp/user-1/unlock", data=b"")  # a callback of LOCKED: the run is at WAITING
    assert wrong.status_code == 202 and wrong.get_json() == {"status": "WAITING", "version": 2}
    bad_code = web.post("/otp/user-1/verify", data=b"0000")  # the callback skips: nothing written
    assert bad_code.get_json() == {"status": "WAITING", "version": 2}
    applied = web.post("/otp/user-1/verify", data=b"4242")
    assert applied.status_code == 202 and applied.get_json() == {"status": "VERIFIED", "version": 3}
    again = web.post("/otp/user-1/verify", data=b"4242")  # the provider retries the webhook
    assert again.get_json() == {"status": "VERIFIED", "version": 3}

    run = wf.lookup(run_id)
    assert run.status == Otp.VERIFIED and run.run_state == RunState.COMPLETED
    assert [h.status for h in wf.history(run_id)] == [Otp.SENT, Otp.WAITING, Otp.VERIFIED]
    assert wf.store.outbox(run_id) == []  # leaving WAITING cancelled its timeout in the same write


@pytest.mark.parametrize("broker", ["redis"])
def test_a_one_hour_timeout_fires_once_with_three_workers_and_a_failing_one_pauses_the_run(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore, tmp_path: Path
) -> None:
    clock = SharedClock(str(tmp_path / "clock"))
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"WFC_CLOCK_FILE": str(tmp_path / "clock")}
    wf = _client(broker_url, store, clock)
    for _ in range(3):
        start_worker("tests.acceptance.otpapp", "otp.*", concurrency=1, env=env)
    expiring = [wf.trigger(f"exp-{i}", initial_value=Code(marker_dir=str(markers))) for i in range(15)]
    verified = [wf.trigger(f"ver-{i}", initial_value=Code(marker_dir=str(markers))) for i in range(5)]
    failing = wf.trigger("fail-1", initial_value=Code(marker_dir=str(markers), fail_expiry=True))
    every = [*expiring, *verified, failing]
    wait_until(lambda: all(_timeout_pending(wf, r) for r in every), 120, "every run's timeout to be pending")
    for i in range(5):
        wf.callback(f"ver-{i}", Otp.WAITING, "4242")  # leaves WAITING before the hour: the timeout is cancelled

    clock.advance(timedelta(minutes=59))
    canary = wf.trigger("canary-1", initial_value=Code(marker_dir=str(markers)))
    wait_until(lambda: _timeout_pending(wf, canary), 60, "the canary's timeout")  # workers ran at 59 minutes
    assert all(wf.lookup(r).status == Otp.WAITING for r in expiring)  # not due yet

    clock.advance(timedelta(minutes=2))
    wait_until(lambda: all(wf.lookup(r).status == Otp.EXPIRED for r in expiring), 120, "the timeouts to fire")
    wait_until(lambda: wf.lookup(failing).run_state == RunState.PAUSED, 120, "the failing timeout to pause its run")

    # Hours later every worker's relay has looked many times: the canary's own timeout proves it.
    clock.advance(timedelta(hours=3))
    wait_until(lambda: wf.lookup(canary).status == Otp.EXPIRED, 120, "the canary's timeout")
    assert [_fired(markers, r) for r in expiring] == [1] * 15
    assert [_fired(markers, r) for r in verified] == [0] * 5
    assert all(wf.lookup(r).status == Otp.VERIFIED for r in verified)
    paused = wf.lookup(failing)
    assert paused.status == Otp.WAITING and paused.meta.run_state_reason
    assert _fired(markers, failing) == PAUSE_AFTER_ERR_COUNT
    [errors] = wf.errors(failing)
    assert errors.count == PAUSE_AFTER_ERR_COUNT and "SMS gateway is down" in errors.last_error.message
