"""Acceptance: deleting the data of a run whose object type has required fields, on a real worker."""

from __future__ import annotations

from collections.abc import Callable

from tests.acceptance.conftest import Worker
from tests.acceptance.erasureapp import Address, Claim, Stage, builder
from tests.acceptance.helpers import client_app, wait_until
from tests.acceptance.test_cli import cli
from workflow_celery import RunState, SQLStore


def test_a_model_with_required_fields_is_deleted_to_its_zero_value(
    start_worker: Callable[..., Worker], store: SQLStore, pg_database: str, broker_url: str
) -> None:
    wf = builder().build(client_app(broker_url), store)
    start_worker("tests.acceptance.erasureapp", "erasure.*", concurrency=1)
    claim = Claim(
        id="claim-7",
        claimant="Ada Lovelace",
        amount=120.5,
        approved=True,
        address=Address(street="12 Ada Lane", city="London"),
        documents=["passport-of-Ada"],
        note="Ada called twice",
        currency="GBP",
    )
    run_id = wf.trigger("claim-7", initial_value=claim)
    wf.await_status("claim-7", run_id, Stage.FILED, timeout=30)

    deleted = cli(
        "-A",
        "tests.acceptance.erasureapp",
        "runs",
        "delete-data",
        "--foreign-id",
        "claim-7",
        db=pg_database,
        broker=broker_url,
    )
    assert deleted.returncode == 0, deleted.stderr
    assert f"run {run_id} (claim-7): COMPLETED -> REQUESTED_DATA_DELETED" in deleted.stdout
    wait_until(lambda: wf.lookup(run_id).run_state == RunState.DATA_DELETED, 30, "the worker to delete the data")

    assert wf.lookup(run_id).object == Claim(
        id="",
        claimant="",
        amount=0.0,
        approved=False,
        address=Address(street="", city=""),
        documents=[],
        note=None,
    )
    assert not any(b"Ada" in h.object for h in store.history(run_id))
