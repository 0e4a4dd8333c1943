"""Schedules: specs and their slots, DST, and firing with a fake clock through the in-process broker."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from workflow_celery import ConfigurationError, MemoryStore, RunState
from workflow_celery.core.scheduler import LEASE, resolve_filter
from workflow_celery.core.schedules import SlotOutcome, parse_spec, slot_run_id
from workflow_celery.testing import FakeClock, in_process

from .workflows import Status, Thing, chain

BASE = datetime(2025, 1, 1, 10, 30, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")
ALLOWED: list[str] = []


def allow_listed(foreign_id: str, slot: datetime) -> bool:
    """A module-level filter: only slots whose local hour:minute is in ALLOWED."""
    assert slot.tzinfo is not None
    return slot.strftime("%H:%M") in ALLOWED


def broken_filter(foreign_id: str, slot: datetime) -> bool:
    raise RuntimeError("the calendar service is down")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("* * * * *", datetime(2025, 1, 1, 10, 31, tzinfo=UTC)),
        ("15 * * * *", datetime(2025, 1, 1, 11, 15, tzinfo=UTC)),
        ("0 9 15 * *", datetime(2025, 1, 15, 9, 0, tzinfo=UTC)),
        ("0 18 * * 5", datetime(2025, 1, 3, 18, 0, tzinfo=UTC)),
        ("*/15 9-17 * * MON-FRI", datetime(2025, 1, 1, 10, 45, tzinfo=UTC)),
        ("0 0 1,15 * *", datetime(2025, 1, 15, 0, 0, tzinfo=UTC)),
        ("0 12 * JAN,JUL SUN", datetime(2025, 1, 5, 12, 0, tzinfo=UTC)),
        ("  30   2 * * *  ", datetime(2025, 1, 2, 2, 30, tzinfo=UTC)),
        ("@hourly", datetime(2025, 1, 1, 11, 0, tzinfo=UTC)),
        ("@daily", datetime(2025, 1, 2, tzinfo=UTC)),
        ("@midnight", datetime(2025, 1, 2, tzinfo=UTC)),
        ("@weekly", datetime(2025, 1, 5, tzinfo=UTC)),
        ("@monthly", datetime(2025, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2026, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2026, 1, 1, tzinfo=UTC)),
        ("@every 10m", datetime(2025, 1, 1, 10, 40, tzinfo=UTC)),
        ("@every 1h30m", datetime(2025, 1, 1, 12, 0, tzinfo=UTC)),  # multiples of 90 min since 1970
        ("@every 30s", datetime(2025, 1, 1, 10, 30, 30, tzinfo=UTC)),
        ("@every 2d", datetime(2025, 1, 2, tzinfo=UTC)),
    ],
)
def test_the_next_slot_is_the_first_strictly_after(spec: str, expected: datetime) -> None:
    assert parse_spec(spec).next_after(BASE) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("60 * * * *", "not a valid cron expression"),
        ("* 24 * * *", "not a valid cron expression"),
        ("* * 32 * *", "not a valid cron expression"),
        ("* * * 13 *", "not a valid cron expression"),
        ("* * * * 8", "not a valid cron expression"),
        ("abc * * * *", "not a valid cron expression"),
        ("@unknown", "unknown schedule spec"),
        ("@every", "takes a duration"),
        ("@every soon", "takes a duration"),
        ("@every 10", "takes a duration"),
        ("@every 0s", "at least one second"),
        ("@every -5m", "takes a duration"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_spec(spec)


def test_a_bad_time_zone_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        parse_spec("@daily", "Mars/Olympus")
    with pytest.raises(ConfigurationError, match="IANA"):
        parse_spec("@daily", "")


def _local_slots(spec: str, start: datetime, count: int) -> list[str]:
    slots = parse_spec(spec, "Europe/London").slots(start)
    return [next(slots).astimezone(LONDON).strftime("%m-%d %H:%M%z") for _ in range(count)]


def test_across_the_spring_change_a_slot_in_the_skipped_hour_fires_when_the_clocks_jump() -> None:
    # 2026-03-29 01:00 GMT becomes 02:00 BST: 01:30 does not exist that day.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert _local_slots("30 1 * * *", start, 3) == ["03-29 02:00+0100", "03-30 01:30+0100", "03-31 01:30+0100"]
    assert _local_slots("0 * * * *", datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 3) == [
        "03-29 00:00+0000",
        "03-29 02:00+0100",
        "03-29 03:00+0100",
    ]


def test_across_the_autumn_change_a_daily_slot_fires_once_and_an_hourly_one_in_both_hours() -> None:
    # 2026-10-25 02:00 BST becomes 01:00 GMT: 01:00-01:59 happens twice.
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    assert _local_slots("30 1 * * *", start, 2) == ["10-25 01:30+0100", "10-26 01:30+0000"]
    assert _local_slots("0 * * * *", datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 3) == [
        "10-25 01:00+0100",
        "10-25 01:00+0000",
        "10-25 02:00+0000",
    ]


def test_a_daily_slot_keeps_its_local_time_across_a_change() -> None:
    slots = parse_spec("0 9 * * *", "Europe/London").slots(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    assert [next(slots).hour for _ in range(3)] == [9, 8, 8]  # 09:00 GMT, then 09:00 BST = 08:00 UTC


def test_fired_across_the_spring_change_a_daily_slot_runs_once_a_day_at_the_documented_times() -> None:
    clock = FakeClock(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("night", "30 1 * * *", time_zone="Europe/London")
    for _ in range(4 * 24 * 4):  # four days, a look every 15 minutes
        clock.advance(timedelta(minutes=15))
        broker.run_until_idle()
    fired = sorted(s.slot_at.astimezone(LONDON).strftime("%m-%d %H:%M%z") for s in wf.schedule_slots("night"))
    assert fired == ["03-28 01:30+0000", "03-29 02:00+0100", "03-30 01:30+0100", "03-31 01:30+0100"]
    assert {s.outcome for s in wf.schedule_slots("night")} == {SlotOutcome.TRIGGERED} and len(wf.list()) == 4


def test_a_slot_run_id_is_the_same_for_the_same_slot_only() -> None:
    a = slot_run_id("wf", "fid", BASE)
    assert a == slot_run_id("wf", "fid", BASE.astimezone(LONDON))
    assert a != slot_run_id("wf", "fid", BASE + timedelta(minutes=1))
    assert a != slot_run_id("wf", "other", BASE)


def test_a_schedule_fires_one_run_per_slot_and_records_it() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("report", "@every 10m", initial_value=Thing(name="nightly"))
    assert broker.relay() == 0  # nothing due before 10:40
    clock.set(datetime(2025, 1, 1, 10, 40, 5, tzinfo=UTC))
    broker.run_until_idle()
    [run] = wf.list()
    assert run.run_id == slot_run_id("chain", "report", datetime(2025, 1, 1, 10, 40, tzinfo=UTC))
    assert run.object.name == "nightly" and run.status == Status.END and run.run_state == RunState.COMPLETED
    assert broker.relay() == 0  # the slot fires once
    clock.set(datetime(2025, 1, 1, 10, 50, 0, tzinfo=UTC))
    broker.run_until_idle()
    assert len(wf.list()) == 2
    [later, first] = wf.schedule_slots("report")
    assert [first.outcome, later.outcome] == [SlotOutcome.TRIGGERED, SlotOutcome.TRIGGERED]
    assert later.slot_at == datetime(2025, 1, 1, 10, 50, tzinfo=UTC) and later.run_id == wf.list()[0].run_id
    [schedule] = wf.schedules()
    assert schedule.next_slot == datetime(2025, 1, 1, 11, 0, tzinfo=UTC) and schedule.last_outcome == "triggered"


def test_a_slot_whose_previous_run_is_in_progress_is_skipped_and_recorded() -> None:
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    blocker = wf.trigger("report")  # not answered: stays initiated
    wf.schedule("report", "@every 10m")
    clock.set(datetime(2025, 1, 1, 10, 40, tzinfo=UTC))
    assert wf.fire_schedules_once() == 1
    [slot] = wf.schedule_slots("report")
    assert slot.outcome == SlotOutcome.SKIPPED and slot.run_id == blocker and blocker in slot.detail
    assert [r.run_id for r in wf.list()] == [blocker]
    assert wf.schedules()[0].next_slot == datetime(2025, 1, 1, 10, 50, tzinfo=UTC)


def test_after_downtime_the_latest_missed_slot_fires_once() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("report", "0 * * * *")
    clock.set(datetime(2025, 1, 1, 15, 20, tzinfo=UTC))  # 11:00 .. 15:00 passed with no worker
    broker.run_until_idle()
    [run] = wf.list()
    assert run.run_id == slot_run_id("chain", "report", datetime(2025, 1, 1, 15, 0, tzinfo=UTC))
    [slot] = wf.schedule_slots("report")
    assert slot.detail == "fired 20m00s late; 4 earlier slot(s) missed"
    assert wf.schedules()[0].next_slot == datetime(2025, 1, 1, 16, 0, tzinfo=UTC)


def test_with_catch_up_skip_missed_slots_do_not_fire_but_a_slightly_late_one_does() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("report", "0 * * * *", catch_up="skip")
    clock.set(datetime(2025, 1, 1, 13, 20, tzinfo=UTC))
    broker.run_until_idle()
    assert wf.list() == []
    [slot] = wf.schedule_slots("report")
    assert slot.outcome == SlotOutcome.MISSED and slot.slot_at == datetime(2025, 1, 1, 13, 0, tzinfo=UTC)
    assert slot.detail == "3 slot(s) missed (none fired within 60s of its time), up to this one"
    clock.set(datetime(2025, 1, 1, 14, 0, 30, tzinfo=UTC))  # 30 s late: within the grace
    broker.run_until_idle()
    assert len(wf.list()) == 1


def test_slots_less_than_a_minute_late_each_fire_in_order() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("tick", "@every 1s")
    clock.set(BASE + timedelta(seconds=30))  # a busy worker: 30 slots at once, each within the grace
    assert wf.fire_schedules_once() == 1
    slots = wf.schedule_slots("tick", limit=100)
    assert [s.slot_at for s in reversed(slots)] == [BASE + timedelta(seconds=i) for i in range(1, 31)]
    # The first started a run; it was still in progress (not answered yet) when the others came.
    assert [s.outcome for s in slots].count(SlotOutcome.TRIGGERED) == 1
    assert [s.outcome for s in slots].count(SlotOutcome.SKIPPED) == 29
    broker.run_until_idle()
    clock.advance(timedelta(seconds=1))
    broker.run_until_idle()
    assert len(wf.list()) == 2 and wf.schedules()[0].next_slot == BASE + timedelta(seconds=32)


def test_a_missed_slot_and_younger_ones_the_missed_is_recorded_the_young_fire() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("tick", "@every 1m")
    clock.set(BASE + timedelta(minutes=4, seconds=40))  # 10:31 .. 10:33 missed; 10:34 is 40 s late
    broker.run_until_idle()
    [young, missed] = wf.schedule_slots("tick")
    assert (missed.outcome, missed.slot_at) == (SlotOutcome.MISSED, BASE + timedelta(minutes=3))
    assert (young.outcome, young.slot_at) == (SlotOutcome.TRIGGERED, BASE + timedelta(minutes=4))
    assert len(wf.list()) == 1


def test_a_filter_vetoes_slots_by_their_local_time() -> None:
    clock = FakeClock(datetime(2025, 6, 1, 8, 59, tzinfo=UTC))
    wf, broker = in_process(chain(), clock=clock)
    ALLOWED[:] = ["10:00"]
    try:
        wf.schedule("report", "@hourly", time_zone="Europe/London", filter=allow_listed)
        clock.set(datetime(2025, 6, 1, 9, 0, tzinfo=UTC))  # 10:00 BST
        broker.run_until_idle()
        clock.set(datetime(2025, 6, 1, 10, 0, tzinfo=UTC))  # 11:00 BST
        broker.run_until_idle()
    finally:
        ALLOWED.clear()
    assert [s.outcome for s in wf.schedule_slots("report")] == [SlotOutcome.FILTERED, SlotOutcome.TRIGGERED]
    assert len(wf.list()) == 1


def test_a_failing_filter_does_not_skip_its_slot() -> None:
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    wf.schedule("report", "@every 10m", filter=broken_filter)
    clock.set(datetime(2025, 1, 1, 10, 40, tzinfo=UTC))
    assert wf.fire_schedules_once() == 1
    [slot] = wf.schedule_slots("report")
    assert slot.outcome == SlotOutcome.FAILED and "calendar service is down" in slot.detail
    assert wf.fire_schedules_once() == 0  # leased until the retry
    schedule = wf.schedules()[0]
    assert schedule.next_slot == datetime(2025, 1, 1, 10, 40, tzinfo=UTC) and schedule.leased_until is not None
    assert schedule.leased_until >= clock.now() + timedelta(seconds=5)


def test_a_filter_must_be_importable_by_name() -> None:
    wf, _ = in_process(chain())
    with pytest.raises(ConfigurationError, match="module-level function"):
        wf.schedule("report", "@daily", filter=lambda fid, slot: True)

    def nested(foreign_id: str, slot: datetime) -> bool:
        return True

    with pytest.raises(ConfigurationError, match="module-level function"):
        wf.schedule("report", "@daily", filter=nested)
    assert wf.schedules() == []


def test_defining_a_schedule_again_keeps_its_slot_and_a_new_spec_starts_afresh() -> None:
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    wf.schedule("report", "@every 10m")
    clock.advance(timedelta(minutes=15))  # 10:45: the 10:40 slot is due and not fired yet
    wf.schedule("report", "@every 10m", initial_value=Thing(name="v2"))
    [same] = wf.schedules()
    assert same.next_slot == datetime(2025, 1, 1, 10, 40, tzinfo=UTC) and same.revision == 1
    assert same.initial_value is not None and b"v2" in same.initial_value
    wf.schedule("report", "@hourly")
    [changed] = wf.schedules()
    assert changed.next_slot == datetime(2025, 1, 1, 11, 0, tzinfo=UTC) and changed.revision == 2
    assert wf.unschedule("report") is True and wf.unschedule("report") is False and wf.schedules() == []


def test_bad_arguments_are_refused_before_anything_is_stored() -> None:
    wf, _ = in_process(chain())
    with pytest.raises(ConfigurationError, match="catch_up"):
        wf.schedule("report", "@daily", catch_up="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a valid cron"):
        wf.schedule("report", "61 * * * *")
    with pytest.raises(ValueError, match="foreign_id must be a non-empty string"):
        wf.schedule("", "@daily")
    assert wf.schedules() == []


def test_many_threads_firing_at_once_start_one_run_per_slot() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    for i in range(20):
        wf.schedule(f"report-{i}", "@every 1m")
    for minute in range(1, 6):
        clock.set(BASE + timedelta(minutes=minute))
        threads = [threading.Thread(target=wf.fire_schedules_once) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        broker.drain()
    runs = wf.list(limit=1000)
    assert len(runs) == 20 * 5
    assert len({r.run_id for r in runs}) == 100


FLAKY_CALLS: list[datetime] = []


def failing_for_a_while(foreign_id: str, slot: datetime) -> bool:
    """Fails for its first five calls (a calendar service that is down), then allows every slot."""
    FLAKY_CALLS.append(slot)
    if len(FLAKY_CALLS) <= 5:
        raise RuntimeError("the calendar service is down")
    return True


def test_a_slot_failing_for_minutes_is_retried_ever_less_often_and_never_counted_as_missed() -> None:
    FLAKY_CALLS.clear()
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("report", "@hourly", filter=failing_for_a_while)
    slot = datetime(2025, 1, 1, 11, 0, tzinfo=UTC)
    clock.set(slot)
    tries: list[datetime] = []
    for _ in range(20 * 60 // 5):  # twenty minutes, a look every five seconds
        if wf.fire_schedules_once():
            tries.append(clock.now())
        clock.advance(timedelta(seconds=5))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tries)]
    assert len(FLAKY_CALLS) == 6 and all(s == slot for s in FLAKY_CALLS)  # the same slot, however late
    assert gaps[:4] == sorted(gaps[:4]) and gaps[3] > gaps[0]  # ever less often
    outcomes = [s.outcome for s in wf.schedule_slots("report")]
    assert outcomes == [SlotOutcome.TRIGGERED] and SlotOutcome.MISSED not in outcomes
    [schedule] = wf.schedules()
    assert schedule.last_outcome == "triggered" and schedule.next_slot == slot + timedelta(hours=1)
    broker.run_until_idle()
    assert wf.list()[0].run_id == slot_run_id("chain", "report", slot)


def test_a_failing_slot_is_shown_as_failed_until_it_fires() -> None:
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    wf.schedule("report", "@hourly", filter=broken_filter)
    clock.set(datetime(2025, 1, 1, 11, 30, tzinfo=UTC))  # 30 minutes late and failing
    wf.fire_schedules_once()
    [schedule] = wf.schedules()
    assert (schedule.last_outcome, schedule.last_slot) == ("failed", datetime(2025, 1, 1, 11, 0, tzinfo=UTC))
    assert schedule.leased_until == clock.now() + timedelta(minutes=5)  # half its age, at most five minutes


def test_a_filter_in_a_module_beside_the_apps_is_found_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "besides_the_app.py").write_text(
        "def weekdays(foreign_id, slot):\n    return slot.weekday() < 5\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    found = resolve_filter("besides_the_app:weekdays")
    assert found("x", datetime(2025, 1, 6, tzinfo=UTC)) is True
    assert str(tmp_path) not in sys.path
    with pytest.raises(ConfigurationError, match="keep filters in the app's module"):
        resolve_filter("nowhere_at_all:weekdays")


def test_messages_say_what_to_write_instead() -> None:
    with pytest.raises(ConfigurationError, match=r"has 6 fields.*cron has no seconds field; use @every 30s"):
        parse_spec("0 0 * * * *")
    with pytest.raises(ConfigurationError) as three:
        parse_spec("every 5 minutes")
    assert "has 3 fields" in str(three.value) and "seconds" not in str(three.value)
    with pytest.raises(ConfigurationError, match="such as 30 February, is refused too"):
        parse_spec("0 0 30 2 *")
    with pytest.raises(ConfigurationError, match="minute 0-59"):
        parse_spec("60 * * * *")
    assert parse_spec("@every 1 h 30 m").text == "@every 1h30m"
    wf, _ = in_process(chain())
    with pytest.raises(ConfigurationError, match="the function itself, not its name"):
        wf.schedule("report", "@daily", filter="tests.unit.test_schedules:allow_listed")  # type: ignore[arg-type]


def hangs(foreign_id: str, slot: datetime) -> bool:
    time.sleep(3)  # longer than the test's filter timeout
    return True


def exits(foreign_id: str, slot: datetime) -> bool:
    raise SystemExit(3)


def says_no_in_words(foreign_id: str, slot: datetime) -> bool:
    return "no"  # type: ignore[return-value]


def test_a_worker_that_dies_holding_a_schedule_loses_none_of_its_slots() -> None:
    clock = FakeClock(BASE)
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("report", "@every 5m")
    clock.set(datetime(2025, 1, 1, 10, 35, tzinfo=UTC))
    store = wf.store
    assert isinstance(store, MemoryStore)
    [taken] = store.take_due_schedules("chain", clock.now(), clock.now() + LEASE, 10)  # and then the worker died
    clock.advance(LEASE + timedelta(seconds=1))  # its lease is over: another worker takes the slot, still in time
    assert wf.fire_schedules_once() == 1
    [slot] = wf.schedule_slots("report")
    assert (slot.outcome, slot.slot_at) == (SlotOutcome.TRIGGERED, taken.next_slot)
    broker.run_until_idle()
    assert len(wf.list()) == 1


def test_while_a_worker_fires_several_slots_of_a_schedule_no_other_worker_takes_it() -> None:
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    wf.schedule("tick", "@every 1s")
    clock.set(BASE + timedelta(seconds=10))
    store = wf.store
    assert isinstance(store, MemoryStore)
    seen: list[datetime | None] = []
    original = store.record_slot

    def record_and_look(*args: Any, **kwargs: Any) -> bool:
        kept = original(*args, **kwargs)
        seen.append(store.schedules("chain")[0].leased_until)
        return kept

    store.record_slot = record_and_look  # type: ignore[method-assign]
    wf.fire_schedules_once()
    assert len(seen) == 10 and all(lease is not None for lease in seen[:-1]) and seen[-1] is None


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_for = "a"

    def record_slot(self, slot: Any, revision: int, next_slot: Any, lease_until: Any = None) -> bool:
        if slot.foreign_id == self.fail_for:
            raise ConnectionError("the database went away")
        return super().record_slot(slot, revision, next_slot, lease_until)


def test_a_database_error_on_one_schedule_does_not_stop_the_others() -> None:
    clock = FakeClock(BASE)
    store = FlakyStore()
    wf, _ = in_process(chain(), store=store, clock=clock)
    for fid in ("a", "b", "c"):
        wf.schedule(fid, "@every 1m")
    clock.advance(timedelta(minutes=1))
    assert wf.fire_schedules_once() == 3
    assert [s.outcome for s in wf.schedule_slots("b")] == [SlotOutcome.TRIGGERED]
    assert [s.outcome for s in wf.schedule_slots("c")] == [SlotOutcome.TRIGGERED]
    assert wf.schedule_slots("a") == []  # its lease ends; then it is tried again, still within the grace
    store.fail_for = ""
    clock.advance(LEASE + timedelta(seconds=1))
    wf.fire_schedules_once()
    assert [s.outcome for s in wf.schedule_slots("a")] == [SlotOutcome.TRIGGERED]


def test_a_filter_that_hangs_exits_or_answers_in_words_fails_its_slot_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workflow_celery.core.scheduler.FILTER_TIMEOUT", timedelta(seconds=0.2))
    clock = FakeClock(BASE)
    wf, _ = in_process(chain(), clock=clock)
    wf.schedule("hang", "@every 1m", filter=hangs)
    wf.schedule("exit", "@every 1m", filter=exits)
    wf.schedule("words", "@every 1m", filter=says_no_in_words)
    wf.schedule("plain", "@every 1m")
    clock.advance(timedelta(minutes=1))
    started = time.monotonic()
    assert wf.fire_schedules_once() == 4
    assert time.monotonic() - started < 10
    [hang] = wf.schedule_slots("hang")
    [exit_] = wf.schedule_slots("exit")
    [words] = wf.schedule_slots("words")
    assert hang.outcome == SlotOutcome.FAILED and "did not answer within" in hang.detail
    assert exit_.outcome == SlotOutcome.FAILED and "raised SystemExit" in exit_.detail
    assert words.outcome == SlotOutcome.FAILED and "returned 'no'" in words.detail
    assert [s.outcome for s in wf.schedule_slots("plain")] == [SlotOutcome.TRIGGERED]


def test_after_years_of_downtime_the_latest_slot_fires_at_once_not_year_old_ones() -> None:
    clock = FakeClock(datetime(2022, 1, 1, tzinfo=UTC))
    wf, broker = in_process(chain(), clock=clock)
    wf.schedule("minutely", "* * * * *")
    clock.set(datetime(2025, 1, 1, 10, 30, 30, tzinfo=UTC))  # three years later
    started = time.monotonic()
    wf.fire_schedules_once()
    assert time.monotonic() - started < 5
    [fired, missed] = wf.schedule_slots("minutely")
    assert (fired.slot_at, fired.outcome) == (datetime(2025, 1, 1, 10, 30, tzinfo=UTC), SlotOutcome.TRIGGERED)
    assert (missed.slot_at, missed.outcome) == (datetime(2025, 1, 1, 10, 29, tzinfo=UTC), SlotOutcome.MISSED)
    assert missed.detail.startswith("many slot(s) missed")
    broker.run_until_idle()
    assert len(wf.list()) == 1


def test_odd_specs_and_zones_are_refused() -> None:
    for spec, message in [
        ("@every 1s 1s", "each unit once"),
        ("@every 30m1h", "the largest first"),
        ("@every 3000000d", "at most 3650 days"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            parse_spec(spec)
    assert parse_spec("@EVERY 1S").text == "@every 1s"
    with pytest.raises(ConfigurationError, match="not an IANA zone name"):
        parse_spec("@daily", "localtime")
