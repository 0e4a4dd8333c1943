"""Acceptance: ``examples/django_shop`` as its README section runs it: migrate, its own tests, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import ROOT

SHOP = ROOT / "examples" / "django_shop"


def manage(*args: str, db: str, broker: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": db, "CELERY_BROKER_URL": broker}
    for name in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=SHOP, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("broker", ["redis"])  # the shop's settings take any broker; one is enough here
def test_migrate_on_an_empty_database_then_the_operators_commands(pg_database: str, broker_url: str) -> None:
    assert tables(pg_database) == set()
    migrated = manage("migrate", "--noinput", db=pg_database, broker=broker_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying workflow_celery.0001_initial... OK" in migrated.stdout
    assert {"workflow_records", "workflow_history", "workflow_outbox", "orders_shoporder"} <= tables(pg_database)
    unchanged = manage("makemigrations", "--check", "--dry-run", db=pg_database, broker=broker_url)
    assert unchanged.returncode == 0 and "No changes detected" in unchanged.stdout, unchanged.stdout
    celery = str(Path(sys.executable).with_name("celery"))
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for command in (
        [celery, "-A", "shop", "workflow", "runs", "list"],
        [sys.executable, "manage.py", "workflow", "runs", "list"],
    ):
        listed = subprocess.run(command, cwd=SHOP, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.endswith("(0 runs of shop-orders)\n"), listed.stdout


@pytest.mark.parametrize("broker", ["redis"])  # the shop's tests count the messages waiting on a queue
def test_the_shops_own_tests_pass_under_djangos_test_runner_on_the_test_database(
    pg_database: str, broker_url: str
) -> None:
    tested = manage("test", "orders", "--noinput", "-v", "2", db=pg_database, broker=broker_url, timeout=600)
    assert tested.returncode == 0, tested.stderr[-5000:]
    assert "Ran 16 tests" in tested.stderr and "\nOK" in tested.stderr
    test_database = f"test_{sa.make_url(pg_database).database}"
    assert f"Creating test database for alias 'default' ('{test_database}')" in tested.stderr
    # Every run went to the test database, dropped at the end: the project's database was never touched.
    assert tables(pg_database) == set()
    engine = sa.create_engine(sa.make_url(pg_database).set(database="postgres"))
    try:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": test_database})
            assert left.scalar_one() == 0
    finally:
        engine.dispose()
