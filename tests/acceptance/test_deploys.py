"""Acceptance: a rolling deploy that adds a hook loses no hook execution; removed hooks are discarded by hand."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import Worker
from tests.acceptance.deployapp import OPTIONS, Job, builder
from tests.acceptance.helpers import client_app, marks, wait_all_finished, wait_until
from tests.acceptance.test_cli import cli
from workflow_celery import SQLStore

APP = "tests.acceptance.deployapp"
HOOK_QUEUE = "deploy.hooks.completed"
LEFT = re.compile(r"deploy\.hooks\.completed\[[^\]]+\] succeeded in [\d.]+s: 'hook_unknown_here'")


def test_a_hook_added_in_a_rolling_deploy_runs_for_every_run(
    broker_url: str,
    store: SQLStore,
    pg_database: str,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    # The new release adds `send-sms`; `export` is only known to the steps worker, which stands for a
    # release that had it: no hook worker will ever know it.
    start_worker(APP, "deploy.start", concurrency=1, name="steps", env={"WFC_HOOKS": "sms,export"})
    old = start_worker(APP, "deploy.hooks.*", concurrency=1, name="old-hooks", env={"WFC_NODE": "old"})
    client = builder("sms,export").build(client_app(broker_url), store, **OPTIONS)
    runs = [client.trigger(f"deploy-{i}", initial_value=Job(marker_dir=str(tmp_path))) for i in range(5)]
    wait_all_finished(client, runs, 60)
    # Until the new release arrives, the old hook worker is the only one on the hook queue: it receives
    # every doorbell of the two hooks it does not know, and leaves each of them.
    wait_until(lambda: len(LEFT.findall(old.output())) >= 10, 60, "the old worker to leave 10 unknown doorbells")
    assert old.output().count("leaving completed hook 'send-sms' of workflow deploy") == 1  # logged once
    assert all(not marks(tmp_path, "hook-sms", r) for r in runs)

    start_worker(APP, "deploy.hooks.*", concurrency=1, name="new-hooks", env={"WFC_HOOKS": "sms", "WFC_NODE": "new"})
    wait_until(lambda: all(marks(tmp_path, "hook-sms", r) for r in runs), 90, "send-sms to run for every run")
    for run_id in runs:
        assert [m["node"] for m in marks(tmp_path, "hook-sms", run_id)] == ["new"]
        assert len(marks(tmp_path, "hook-complete", run_id)) == 1
        assert marks(tmp_path, "hook-export", run_id) == []
    # A hook's row is deleted just after the hook returned.
    wait_until(lambda: [m.body["hook"] for m in store.outbox()] == ["export"] * 5, 30, "only export to be pending")

    new_release = {"WFC_HOOKS": "sms"}
    listed = cli("-A", APP, "hooks", "pending", db=pg_database, broker=broker_url, env=new_release)
    assert listed.returncode == 0, listed.stderr
    print(listed.stdout)
    assert re.search(r"^deploy\s+completed\s+export\s+5\s+no$", listed.stdout, re.M), listed.stdout
    as_json = cli("-A", APP, "hooks", "pending", "--json", db=pg_database, broker=broker_url, env=new_release)
    assert json.loads(as_json.stdout) == {
        "pending": [{"workflow": "deploy", "event": "completed", "hook": "export", "pending": 5, "known_here": False}]
    }

    refused = cli(
        "-A", APP, "hooks", "discard", "--event", "completed", "--hook", "send-sms",
        db=pg_database, broker=broker_url, env=new_release,
    )  # fmt: skip
    assert refused.returncode == 1 and "is registered in tests.acceptance.deployapp" in refused.stderr

    dry = cli(
        "-A", APP, "hooks", "discard", "--event", "completed", "--hook", "export", "--dry-run",
        db=pg_database, broker=broker_url, env=new_release,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    print(dry.stdout)
    assert dry.stdout.startswith("would discard 5 pending execution(s) of completed hook 'export' of workflow deploy:")
    assert all(f"run {r} v2 (deploy-{i})" in dry.stdout for i, r in enumerate(runs))
    assert len([m for m in store.outbox() if m.queue == HOOK_QUEUE]) == 5

    done = cli(
        "-A", APP, "hooks", "discard", "--event", "completed", "--hook", "export",
        db=pg_database, broker=broker_url, env=new_release,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("discarded 5 pending execution(s) of completed hook 'export' of workflow deploy:")
    assert store.outbox() == []
    again = cli("-A", APP, "hooks", "pending", db=pg_database, broker=broker_url, env=new_release)
    assert again.stdout.strip() == "no pending hook execution (deploy)"
