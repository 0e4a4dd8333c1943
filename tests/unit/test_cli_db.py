"""``db upgrade`` migrates each database once, however many stores the app builds on it."""

from __future__ import annotations

from pathlib import Path

from tests.unit.workflows import chain
from workflow_celery import InProcessBroker, SQLStore
from workflow_celery.cli.db import _app_engines


def test_two_stores_on_one_database_are_migrated_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    first, second, third = SQLStore(url), SQLStore(url), SQLStore(other)
    try:
        workflows = {
            "a": chain().build(InProcessBroker(), first),
            "b": chain().build(InProcessBroker(), second),
            "c": chain().build(InProcessBroker(), third),
        }
        engines = _app_engines(workflows)
        assert [str(e.url) for e in engines] == [url, other]
    finally:
        for store in (first, second, third):
            store.dispose()
