"""Acceptance: schedules fired by several real workers on PostgreSQL, one run per slot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import client_app, wait_until
from tests.acceptance.scheduleapp import RELAY_INTERVAL, Beat, builder
from workflow_celery import RunState, SQLStore
from workflow_celery.core.schedules import SlotOutcome, slot_run_id

RUN_FOR_S = 10


def _seconds_between(start: datetime, end: datetime) -> list[datetime]:
    """Whole seconds strictly after ``start`` and at or before ``end``."""
    first = start.replace(microsecond=0) + timedelta(seconds=1)
    return [first + timedelta(seconds=i) for i in range(int((end - first).total_seconds()) + 1)]


@pytest.mark.parametrize("broker", ["redis"])  # the schedule lives in the database; one broker is enough
def test_an_every_second_schedule_on_three_workers_starts_one_run_per_slot(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore
) -> None:
    wf = builder().build(client_app(broker_url), store, relay_interval=RELAY_INTERVAL)
    workers = [start_worker("tests.acceptance.scheduleapp", "ticks.*", concurrency=1) for _ in range(3)]
    defined = datetime.now(UTC)
    wf.schedule("tick", "@every 1s", initial_value=Beat(label="every second"))
    wait_until(lambda: len(wf.list(limit=1000)) >= 2, 60, "the first slots to fire")
    time.sleep(RUN_FOR_S)  # the schedule runs for this long: the duration is what is tested
    wf.unschedule("tick")
    stopped = datetime.now(UTC)
    for worker in workers:
        worker.kill_hard()

    runs = wf.list(limit=1000)
    slot_of = {slot_run_id("ticks", "tick", s): s for s in _seconds_between(defined, stopped)}
    fired = [slot_of.get(r.run_id) for r in runs]
    assert None not in fired, "a run whose id is not that of a slot"
    assert len(set(fired)) == len(fired)  # one run per slot
    fired_slots = sorted(s for s in fired if s is not None)
    between = [s for s in slot_of.values() if fired_slots[0] <= s <= fired_slots[-1]]
    assert fired_slots == between, "a slot between the first and the last fired has no run"
    assert len(fired_slots) >= len(slot_of) - 2 - 1 and len(fired_slots) >= RUN_FOR_S  # ± the first and last
    finished = [r for r in runs if r.run_state == RunState.COMPLETED]
    assert len(finished) >= len(runs) - 1  # the last may have been cut short by the kill
    assert all(r.object.label == "every second" for r in runs)
    # Which worker fired a slot varies: the leases spread them (each worker logs nothing per slot).
    assert sum("ticks.due" in w.output() for w in workers) >= 1


@pytest.mark.parametrize("broker", ["redis"])
def test_a_slot_whose_run_is_still_going_is_skipped_and_the_cli_shows_it(
    broker_url: str, start_worker: Callable[..., Worker], store: SQLStore, pg_database: str
) -> None:
    wf = builder().build(client_app(broker_url), store, relay_interval=RELAY_INTERVAL)
    blocker = wf.trigger("tick")  # no worker consumes it yet: it stays in progress
    wf.schedule("tick", "@every 1s")
    start_worker("tests.acceptance.scheduleapp", "ticks.data-deletion", concurrency=1)  # fires slots, runs no step
    wait_until(lambda: any(s.outcome is SlotOutcome.SKIPPED for s in wf.schedule_slots("tick")), 60, "a skipped slot")
    skipped = next(s for s in wf.schedule_slots("tick") if s.outcome is SlotOutcome.SKIPPED)
    assert skipped.run_id == blocker and blocker in skipped.detail
    assert [r.run_id for r in wf.list()] == [blocker]
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    cli = [sys.executable, "-m", "workflow_celery.cli", "-A", "tests.acceptance.scheduleapp", "schedules"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, check=check, cwd=ROOT)

    listed = run("list")
    assert re.search(r"^ticks\s+tick\s+@every 1s\s+UTC\s+\S+\s+\S+\s+skipped$", listed.stdout, re.M), listed.stdout
    slots = subprocess.run(
        [*cli, "slots", "tick", "--json"], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(slots.stdout)["slots"][0]["outcome"] == "skipped"
    removed = run("remove", "tick")
    assert removed.stdout == "removed the schedule of 'tick' from workflow ticks\n"
    assert wf.schedules() == []
    missing = run("remove", "tick", check=False)
    assert missing.returncode == 1 and "no schedule for foreign id 'tick'" in missing.stderr
