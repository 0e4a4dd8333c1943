"""``runs pause|resume|cancel|delete-data`` print the change they made, and where a worker has taken the run since."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.workflows import chain
from workflow_celery import InProcessBroker, MemoryStore, RunState
from workflow_celery.cli import main
from workflow_celery.core import run_actions

BROKER = InProcessBroker()
wf = chain().build(BROKER, MemoryStore())


@pytest.fixture
def fast_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every doorbell the change rings is answered before the command reads the run again."""
    apply = run_actions.apply

    def apply_then_work(*args: Any) -> None:
        apply(*args)
        BROKER.drain()

    monkeypatch.setattr(run_actions, "apply", apply_then_work)


def test_resume_prints_its_own_change_then_where_the_worker_took_the_run(
    fast_worker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = wf.trigger("resumed")
    wf.pause(run_id, "incident")
    assert main(["-A", __name__, "runs", "resume", run_id]) == 0
    assert capsys.readouterr().out == f"chain run {run_id} (resumed): PAUSED -> RUNNING (now COMPLETED)\n"
    assert wf.lookup(run_id).run_state == RunState.COMPLETED


def test_json_says_the_change_and_the_run_as_it_is_now(fast_worker: None, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = wf.trigger("as-json")
    wf.pause(run_id, "incident")
    assert main(["-A", __name__, "runs", "resume", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["previous_run_state"], shown["changed_to"], shown["run_state"]) == ("PAUSED", "RUNNING", "COMPLETED")


def test_a_change_no_worker_has_acted_on_is_printed_alone(capsys: pytest.CaptureFixture[str]) -> None:
    run_id = wf.trigger("paused")
    assert main(["-A", __name__, "runs", "pause", run_id, "--reason", "look"]) == 0
    assert capsys.readouterr().out == f"chain run {run_id} (paused): INITIATED -> PAUSED\n"
