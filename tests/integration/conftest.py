"""Integration tests: real PostgreSQL, SQLite and Redis, no worker processes."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import broker_url, pg_database, store  # noqa: F401  (shared fixtures)


@pytest.fixture
def broker() -> str:
    """Redis only: these tests read the messages in Redis' lists themselves."""
    return "redis"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
