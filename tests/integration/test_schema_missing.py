"""Triggering before the schema exists says how to create it, in one line, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.acceptance.conftest import ROOT

SCRIPT = """
import os, sys
from examples.order_processing import Order, order_workflow
from tests.acceptance.helpers import client_app
from workflow_celery import SQLStore

wf = order_workflow().build(client_app(os.environ["CELERY_BROKER_URL"]), SQLStore(sys.argv[1]))
wf.trigger("order-1", initial_value=Order(id="order-1", items=["book"], total=3.0))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def schemaless_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def test_trigger_before_the_schema_exists(schemaless_url: str, broker_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, schemaless_url],
        cwd=ROOT,
        env={**os.environ, "CELERY_BROKER_URL": broker_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("workflow_celery.core.errors.SchemaMissing: the database has no workflow-celery schema")
    assert f"run `workflow-celery db upgrade --url {schemaless_url}`" in last
    # The traceback is the caller's stack only: no SQL statement, no chained driver error.
    assert "INSERT INTO" not in proc.stderr and "direct cause" not in proc.stderr
    assert "During handling" not in proc.stderr
    assert redis.Redis.from_url(broker_url).llen("order-processing.created") == 0
