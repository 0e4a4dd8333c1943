"""make_run and make_record: a step or hook unit-tested in one line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflow_celery import ConfigurationError, Run, RunState, TypedRecord
from workflow_celery.testing import make_record, make_run

from .workflows import Status, Thing, middle, start


def test_a_step_runs_on_a_made_run() -> None:
    run = make_run(Thing(name="a"), Status.START)
    assert isinstance(run, Run)
    assert start(run) == Status.MIDDLE
    assert run.object.steps == ["start"]
    assert middle(run) == Status.END


def test_defaults_describe_a_running_run_at_version_1() -> None:
    before = datetime.now(UTC)
    run = make_run(Thing(), Status.MIDDLE)
    assert run.run_state is RunState.RUNNING
    assert (run.foreign_id, run.run_id, run.workflow_name) == ("foreign-id-1", "run-1", "test-workflow")
    assert run.meta.version == 1 and run.meta.status_description == "MIDDLE"
    assert run.created_at == run.updated_at and run.created_at >= before
    assert run.created_at.tzinfo is not None


def test_every_field_can_be_set() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = make_record(
        Thing(name="b"),
        Status.END,
        run_state=RunState.PAUSED,
        foreign_id="thing-9",
        run_id="r-9",
        workflow_name="chain",
        version=7,
        reason="investigating",
        at=at,
    )
    assert isinstance(record, TypedRecord) and not isinstance(record, Run)
    assert (record.foreign_id, record.run_id, record.workflow_name) == ("thing-9", "r-9", "chain")
    assert record.run_state is RunState.PAUSED and record.status is Status.END
    assert record.meta.version == 7 and record.meta.run_state_reason == "investigating"
    assert record.created_at == at == record.updated_at


def test_special_returns_compare_equal_to_the_same_call() -> None:
    def careful(run: Run[Thing, Status]) -> Status:
        return run.skip() if run.object.count else run.pause("nothing to count")

    assert careful(make_run(Thing(count=1), Status.START)) == make_run(Thing(), Status.START).skip()
    paused = careful(make_run(Thing(), Status.START))
    assert paused == make_run(Thing(), Status.START).pause("nothing to count")
    assert paused != make_run(Thing(), Status.START).pause("another reason")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": datetime(2026, 1, 1)}, "aware datetime"),
        ({"version": 0}, "version counts writes from 1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_run(Thing(), Status.START, **kwargs)  # type: ignore[arg-type]


def test_a_status_that_is_not_an_enum_member_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="IntEnum"):
        make_record(Thing(), 2)  # type: ignore[type-var]
