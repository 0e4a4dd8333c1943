"""The shipped contract suite (``workflow_celery.testing.contract``) against every store of the library.

Subclassing is all a third-party store does too; ``TestMemoryStore`` is the
example of ``docs/stores.md``. The SQL stores also give the concurrency tests
several stores on one database (``open_store``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import pytest

from workflow_celery import MemoryStore
from workflow_celery.core.ports import RecordStore
from workflow_celery.testing import contract
from workflow_celery.testing.contract import RecordStoreContract, ScheduleStoreContract
from workflow_celery.testing.contract.support import letter

from .conftest import BACKENDS, Backend


class TestMemoryStore(RecordStoreContract, ScheduleStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        store = MemoryStore()
        store.create_schema()
        return store


class _SQLStoreContract(RecordStoreContract, ScheduleStoreContract):
    """A ``SQLStore`` on a fresh database; ``open_store`` opens more stores (pools) on it."""

    backend_name: ClassVar[str]

    @pytest.fixture
    def backend(self, request: pytest.FixtureRequest) -> Iterator[Backend]:
        backend = BACKENDS[self.backend_name](request)
        yield backend
        backend.close()

    @pytest.fixture
    def store(self, backend: Backend) -> RecordStore:
        return backend.store

    @pytest.fixture
    def open_store(self, backend: Backend) -> Callable[[], RecordStore]:
        return backend.open


@pytest.mark.integration
class TestSQLiteStore(_SQLStoreContract):
    backend_name = "sqlite"


@pytest.mark.integration
class TestPostgresStore(_SQLStoreContract):
    backend_name = "postgres"


def test_a_dead_letter_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        letter(at=datetime(2024, 1, 1))


def test_the_library_imports_pytest_only_for_the_contract_suite() -> None:
    code = (
        "import sys, workflow_celery, workflow_celery.testing\n"
        "assert 'pytest' not in sys.modules, 'imported pytest'\n"
        "import workflow_celery.testing.contract\n"
        "assert 'pytest' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_building_a_store_imports_no_migrations(tmp_path: Path) -> None:
    # Alembic logs a line per plugin at INFO as it loads: an app that only builds a store and triggers stays quiet.
    code = (
        "import sys\n"
        "from workflow_celery import SQLStore\n"
        f"store = SQLStore('sqlite:///{tmp_path / 'quiet.db'}')\n"
        "assert 'alembic' not in sys.modules, 'imported alembic'\n"
        "store.create_schema()\n"
        "assert 'alembic' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _example_in_docs() -> str:
    page = (Path(__file__).resolve().parents[2] / "docs" / "stores.md").read_text(encoding="utf-8")
    section = page[page.index("## Testing your own store") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")] + "\n"


def test_the_package_documents_the_example_of_the_docs() -> None:
    doc = contract.__doc__ or ""
    block = doc[doc.index("::\n\n") + 3 : doc.index("\n\n``RecordStoreContract``")]
    assert textwrap.dedent(block).strip() == _example_in_docs().strip()


@pytest.mark.integration
def test_the_example_of_the_docs_runs_outside_this_project(tmp_path: Path) -> None:
    (tmp_path / "test_my_store.py").write_text(_example_in_docs())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "slot or dead_letter",
            "test_my_store.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b\d+ passed", proc.stdout) and "failed" not in proc.stdout, proc.stdout
