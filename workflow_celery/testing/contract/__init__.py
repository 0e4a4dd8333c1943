"""The ``RecordStore`` contract suite, for testing a store of your own with pytest.

Every store that ships with the library passes it. Subclass one contract class
per store in a test module (its name must start with ``Test``) and override the
``store`` fixture to return a fresh, empty store with its schema created::

    from collections.abc import Iterator
    from pathlib import Path

    import pytest

    from workflow_celery import SQLStore  # your store's class instead
    from workflow_celery.testing.contract import RecordStoreContract


    class TestMyStore(RecordStoreContract):
        @pytest.fixture
        def store(self, tmp_path: Path) -> Iterator[SQLStore]:
            store = SQLStore(f"sqlite:///{tmp_path / 'store.db'}")
            store.create_schema()
            yield store
            store.dispose()

``RecordStoreContract`` is every role at once; ``RunStoreContract``,
``OutboxContract``, ``ClaimsContract``, ``SlotsContract``, ``ErrorLogContract``
and ``DeadLetterBoxContract`` test one role of ``workflow_celery.core.ports``
each; ``ScheduleStoreContract`` tests ``ScheduleStore``, the role a store
takes on to keep ``wf.schedule``'s schedules. The concurrency tests use ``store`` from many threads; override the
``open_store`` fixture (it returns a function opening another store on the same
data, with connections of its own) to have them use several stores at once.

Importing this package imports pytest (a development dependency of yours);
``import workflow_celery`` never does.
"""

from __future__ import annotations

import pytest

# The assertions of the contract modules are rewritten, as in a test module, when pytest runs
# (registered before they are imported; a no-op otherwise).
pytest.register_assert_rewrite(
    *(
        f"{__name__}.{module}"
        for module in (
            "claims",
            "dead_letters",
            "errors",
            "outbox",
            "run_listing",
            "runs",
            "schedules",
            "slots",
            "support",
        )
    )
)

from .claims import ClaimsContract  # noqa: E402
from .dead_letters import DeadLetterBoxContract  # noqa: E402
from .errors import ErrorLogContract  # noqa: E402
from .outbox import OutboxContract  # noqa: E402
from .run_listing import RunListingContract  # noqa: E402
from .runs import RunStoreContract  # noqa: E402
from .schedules import ScheduleStoreContract  # noqa: E402
from .slots import SlotsContract  # noqa: E402
from .support import StoreContract  # noqa: E402

__all__ = [
    "ClaimsContract",
    "DeadLetterBoxContract",
    "ErrorLogContract",
    "OutboxContract",
    "RecordStoreContract",
    "RunListingContract",
    "RunStoreContract",
    "ScheduleStoreContract",
    "SlotsContract",
    "StoreContract",
]


class RecordStoreContract(
    RunStoreContract, OutboxContract, ClaimsContract, SlotsContract, ErrorLogContract, DeadLetterBoxContract
):
    """The whole ``RecordStore`` contract: every role's tests against one ``store`` fixture."""
