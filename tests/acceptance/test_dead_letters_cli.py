"""Acceptance: ``workflow-celery dead-letters`` as a subprocess, on dead letters in a real PostgreSQL database."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

from tests.acceptance.test_cli import COMMAND, cli
from workflow_celery import SQLStore
from workflow_celery.core.dead_letters import DeadLetter

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def kept(id: str, queue: str, body: bytes, seconds: int, reason: str = "not a message: JSONDecodeError") -> DeadLetter:
    return DeadLetter(
        id=id, queue=queue, body=body, reason=reason, received_at=T0 + timedelta(seconds=seconds), worker="w1@host"
    )


def test_list_show_and_discard(store: SQLStore, pg_database: str, broker_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("-A", "examples.orders", "dead-letters", *args, db=pg_database, broker=broker_url)

    store.add_dead_letter(kept("aaaa1111", "order-processing.created", b"this is not json\n\x00\xff", 1))
    store.add_dead_letter(kept("aaaa2222", "order-processing.paid", b"{}", 2, "unknown task 'x'"))
    store.add_dead_letter(kept("bbbb3333", "order-processing.created", b"\x01" * 5000, 3))
    headed = dataclasses.replace(kept("cccc4444", "q", b"{}", 4), headers='{"task": "x", "retries": 2}')
    store.add_dead_letter(headed)
    store.add_dead_letter(dataclasses.replace(kept("dddd5555", "q", b"{}", 5), headers="<a repr, not JSON>"))

    listed = run("list", "--queue", "order-processing.created")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "RECEIVED_AT                ID        QUEUE                     BYTES  REASON",
        "2026-01-02T03:04:08+00:00  bbbb3333  order-processing.created  5000   not a message: JSONDecodeError",
        "2026-01-02T03:04:06+00:00  aaaa1111  order-processing.created  19     not a message: JSONDecodeError",
        "(2 dead letters from queue order-processing.created)",
    ]
    page = json.loads(run("list", "--limit", "1", "--offset", "1", "--json").stdout)
    assert (page["total"], [d["id"] for d in page["dead_letters"]]) == (5, ["cccc4444"])

    # Headers come as an object to script against, and as the text kept, which may not be JSON.
    with_headers = json.loads(run("show", "cccc", "--json").stdout)
    assert with_headers["headers"] == {"task": "x", "retries": 2}
    assert with_headers["headers_text"] == '{"task": "x", "retries": 2}'
    not_json = json.loads(run("show", "dddd", "--json").stdout)
    assert (not_json["headers"], not_json["headers_text"]) == (None, "<a repr, not JSON>")
    assert json.loads(run("show", "aaaa1", "--json").stdout)["headers"] is None
    assert run("discard", "cccc", "dddd").stdout == "discarded 2 dead letters\n"

    shown = run("show", "aaaa1")
    assert shown.returncode == 0, shown.stderr
    assert "queue:            order-processing.created\n" in shown.stdout
    assert shown.stdout.endswith("body:             19 bytes\n  this is not json\n  \\x00\\xff\n")
    long = run("show", "bbbb").stdout
    assert long.endswith("  ... 904 more bytes (--raw writes them all)\n")
    raw = subprocess.run(
        [COMMAND, "-A", "examples.orders", "dead-letters", "show", "aaaa1111", "--raw"],
        env={**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert raw.stdout == b"this is not json\n\x00\xff"

    ambiguous = run("show", "aaaa")
    assert ambiguous.returncode == 1
    assert ambiguous.stderr == (
        "workflow-celery: error: dead letter id prefix 'aaaa' matches 2 dead letters: give more of the id\n"
    )
    typo = run("discard", "aaaa1111", "cccc")
    assert (typo.returncode, typo.stderr) == (1, "workflow-celery: error: dead letter 'cccc' not found\n")
    assert store.count_dead_letters() == 3  # nothing discarded when one id is wrong

    assert run("discard", "--all", "--queue", "order-processing.created").stdout == "discarded 2 dead letters\n"
    assert [d.id for d in store.dead_letters()] == ["aaaa2222"]
    assert run("discard", "aaaa2").stdout == "discarded 1 dead letter\n"
    assert run("list").stdout.splitlines()[-1] == "(0 dead letters)"


def test_workflows_with_a_store_each_on_one_database_list_each_row_once(
    store: SQLStore, pg_database: str, broker_url: str
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("-A", "tests.acceptance.twostoresapp", *args, db=pg_database, broker=broker_url)

    store.add_dead_letter(kept("cccc1111", "connector:first.in", b"junk", 1))
    listed = run("dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert (page["total"], [d["id"] for d in page["dead_letters"]]) == (1, ["cccc1111"])
    shown = run("dead-letters", "show", "cccc")
    assert shown.returncode == 0 and "queue:            connector:first.in\n" in shown.stdout, shown.stderr
    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert len(json.loads(status.stdout)["stores"]) == 1
