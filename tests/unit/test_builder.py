from __future__ import annotations

import enum
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import pytest
from pydantic import BaseModel

import workflow_celery
from tests.unit.workflows import Status, Thing, chain, middle, start
from workflow_celery import Builder, ConfigurationError, InProcessBroker, MemoryStore, Run


def test_public_names_are_pinned() -> None:
    assert workflow_celery.__all__ == sorted(workflow_celery.__all__)
    for name in [
        "Builder",
        "Run",
        "TypedRecord",
        "SQLStore",
        "RunState",
        "WorkflowError",
        "ConfigurationError",
        "WorkflowInProgress",
        "RecordNotFound",
        "InvalidTransition",
        "InvalidRunStateTransition",
        "AwaitTimeout",
    ]:
        assert name in workflow_celery.__all__
        assert getattr(workflow_celery, name)
    for cls in [
        workflow_celery.ConfigurationError,
        workflow_celery.WorkflowInProgress,
        workflow_celery.RecordNotFound,
        workflow_celery.InvalidTransition,
        workflow_celery.InvalidRunStateTransition,
        workflow_celery.AwaitTimeout,
    ]:
        assert issubclass(cls, workflow_celery.WorkflowError)
    assert issubclass(workflow_celery.AwaitTimeout, TimeoutError)


def test_core_imports_neither_celery_nor_sqlalchemy() -> None:
    code = (
        "import sys, importlib, pkgutil, workflow_celery.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('workflow_celery.core.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'sqlalchemy'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    # Importing workflow_celery.core runs workflow_celery/__init__, so check the modules directly instead.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            code.replace(
                "import sys, importlib, pkgutil, workflow_celery.core as core",
                "import sys, importlib, pkgutil, types, pathlib\n"
                "pkg = types.ModuleType('workflow_celery'); "
                "pkg.__path__ = [str(pathlib.Path('workflow_celery').resolve())]; "
                "sys.modules['workflow_celery'] = pkg\n"
                "import workflow_celery.core as core",
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_duplicate_step_is_refused_at_definition_time() -> None:
    b = chain()
    with pytest.raises(ConfigurationError, match="already exists") as err:
        b.add_step(Status.START, start, Status.END)
    assert "chain" in str(err.value)


def test_reserved_status_is_refused() -> None:
    b = Builder("r", Thing, Status)
    with pytest.raises(ConfigurationError, match="reserved"):
        b.add_step(Status.UNKNOWN, start, Status.END)
    with pytest.raises(ConfigurationError, match="reserved"):
        b.add_step(Status.START, start, Status.UNKNOWN)


def test_status_of_another_enum_is_refused() -> None:
    class Other(enum.IntEnum):
        A = 1

    b = Builder("r", Thing, Status)
    with pytest.raises(ConfigurationError, match="not a member of Status"):
        b.add_step(Other.A, start, Status.END)  # type: ignore[arg-type]


def test_no_starting_point_is_refused_at_build() -> None:
    with pytest.raises(ConfigurationError, match="no starting point"):
        Builder("empty", Thing, Status).build(InProcessBroker(), MemoryStore())
    cyc = Builder("cycle", Thing, Status)
    cyc.add_step(Status.START, start, Status.MIDDLE)
    cyc.add_step(Status.MIDDLE, middle, Status.START)
    with pytest.raises(ConfigurationError, match="no starting point"):
        cyc.build(InProcessBroker(), MemoryStore())


def test_unknown_options_are_refused() -> None:
    b = Builder("opts", Thing, Status)
    handle = b.add_step(Status.START, start, Status.MIDDLE)
    with pytest.raises(ConfigurationError, match="unknown step option"):
        handle.with_options(err_backof=timedelta(seconds=1))
    with pytest.raises(ConfigurationError, match="pause_after_err_count"):
        handle.with_options(pause_after_err_count=-1)
    with pytest.raises(ConfigurationError, match="unknown build option"):
        b.build(InProcessBroker(), MemoryStore(), retries=3)
    with pytest.raises(ConfigurationError, match="redeliver_after"):
        b.build(InProcessBroker(), MemoryStore(), redeliver_after=timedelta(0))


def test_bad_names_and_types() -> None:
    with pytest.raises(ConfigurationError, match="workflow name"):
        Builder("has.dot", Thing, Status)
    with pytest.raises(ConfigurationError, match="IntEnum"):
        Builder("x", Thing, str)  # type: ignore[type-var]
    b = Builder("x", Thing, Status)
    with pytest.raises(ConfigurationError, match="no allowed destination"):
        b.add_step(Status.START, start)


def test_builder_cannot_be_built_twice() -> None:
    b = chain()
    b.build(InProcessBroker(), MemoryStore())
    with pytest.raises(ConfigurationError, match="already built"):
        b.build(InProcessBroker(), MemoryStore())


def test_hooks_register_and_decorate() -> None:
    b = chain()

    @b.on_complete
    def notify(record: object) -> None:
        return None

    assert notify.__name__ == "notify"
    b.on_cancel(notify)
    b.on_pause(notify)
    wf = b.build(InProcessBroker(), MemoryStore())
    assert wf.queues() == [
        "chain.start",
        "chain.middle",
        "chain.data-deletion",
        "chain.hooks.completed",
        "chain.hooks.cancelled",
        "chain.hooks.paused",
    ]


@dataclass
class Inner:
    n: int = 0


@dataclass
class Outer:
    inner: Inner
    tags: list[str]


class Model(BaseModel):
    name: str = "m"
    inner: Inner = Inner()


@pytest.mark.parametrize(
    ("object_type", "value"),
    [(Outer, Outer(inner=Inner(n=3), tags=["a"])), (Model, Model(name="z", inner=Inner(n=2))), (dict, {"a": [1, 2]})],
)
def test_dataclass_pydantic_and_dict_objects_round_trip(object_type: type, value: object) -> None:
    def bump(run: Run[object, Status]) -> Status:
        return Status.END

    b: Builder[object, Status] = Builder("objs", object_type, Status)
    b.add_step(Status.START, bump, Status.END)
    broker, store = InProcessBroker(), MemoryStore()
    wf = b.build(broker, store)
    run_id = wf.trigger("o-1", initial_value=value)
    broker.drain()
    got = wf.lookup(run_id).object
    assert got == value and type(got) is type(value)


def test_worker_refuses_a_time_limit_longer_than_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery
    from celery.exceptions import ImproperlyConfigured

    from workflow_celery.adapters.celery import check_time_limits

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery would prefer it to the app's broker_url
    app = Celery("t", broker="redis://127.0.0.1:1/0")
    app.conf.task_time_limit = 7200
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    with pytest.raises(ImproperlyConfigured, match="visibility_timeout"):
        check_time_limits(app)
    app.conf.task_time_limit = 300
    check_time_limits(app)
    app.conf.broker_url = "amqp://guest@127.0.0.1//"
    app.conf.task_time_limit = 1790
    app.conf.workflow_consumer_timeout = 3600
    check_time_limits(app)  # RabbitMQ has no visibility timeout: only its consumer_timeout counts


@pytest.mark.parametrize("url", ["amqp://guest@127.0.0.1//", "pyamqp://guest@127.0.0.1/shop", None])
def test_worker_refuses_a_time_limit_not_below_rabbitmqs_consumer_timeout(
    url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import Celery
    from celery.exceptions import ImproperlyConfigured

    from workflow_celery.adapters.celery import check_time_limits

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = Celery("t", broker=url)  # no broker at all is Celery's default: RabbitMQ on localhost
    b = Builder("limits", dict, Status)
    b.add_step(Status.START, lambda run: Status.END, Status.END)
    b.build(app, MemoryStore(), max_retry_countdown=timedelta(seconds=60))

    app.conf.task_time_limit = 1740  # RabbitMQ's default consumer_timeout is 1800 s
    with pytest.raises(ImproperlyConfigured) as refused:
        check_time_limits(app)
    assert str(refused.value).startswith(
        "task_time_limit (1740s) plus max_retry_countdown (60s) must be shorter than RabbitMQ's consumer_timeout "
        "(1800s, setting workflow_consumer_timeout)"
    )
    app.conf.task_time_limit = 1739
    check_time_limits(app)

    app.conf.workflow_consumer_timeout = 600  # the server's value, declared
    with pytest.raises(ImproperlyConfigured, match=r"consumer_timeout \(600s"):
        check_time_limits(app)
    app.conf.task_time_limit = 539
    check_time_limits(app)

    app.conf.workflow_consumer_timeout = None  # a server without consumer_timeout
    app.conf.task_time_limit = 86400
    check_time_limits(app)


def test_no_time_limit_on_rabbitmq_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from celery import Celery

    from workflow_celery.adapters.celery import check_time_limits

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = Celery("t", broker="amqp://guest@127.0.0.1//")
    app.conf.task_time_limit = None
    check_time_limits(app)
    assert "task_time_limit is not set" in caplog.text and "consumer_timeout (1800s)" in caplog.text
