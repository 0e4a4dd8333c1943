"""Real ``celery worker`` processes, a real broker and a real PostgreSQL.

Every test that takes ``broker_url`` (or a fixture built on it: ``start_worker``,
``orders``) runs twice, on Redis and on RabbitMQ, as test ``[redis]`` and test
``[rabbitmq]``. A test about one broker's own behaviour pins it, saying why::

    @pytest.mark.parametrize("broker", ["redis"])  # flushes a Redis database

Each test has a broker of its own: a Redis database emptied before and after it,
or a RabbitMQ virtual host created for it and deleted after it (``rabbitmqctl``,
so the tests run on the broker's host, as root or the rabbitmq user).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import redis
import sqlalchemy as sa

from examples.notifications import Notifications
from examples.order_processing import Order, OrderStatus, order_workflow
from tests.acceptance.helpers import client_app
from workflow_celery import SQLStore, Workflow

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("WORKFLOW_CELERY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("WORKFLOW_CELERY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
BROKERS = ["redis", "rabbitmq"]
PG_ADMIN_URL = os.environ.get("WORKFLOW_CELERY_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/acceptance" in str(item.fspath):
            item.add_marker(pytest.mark.acceptance)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for each test, so no test sees another's runs; its URL."""
    name = f"wfc_accept_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Tests run one at a time and each flushes its database first, so the numbers can be reused.
# WORKFLOW_CELERY_TEST_REDIS_DBS ("first-last") gives two suites on one Redis separate databases.
_first, _last = (int(n) for n in os.environ.get("WORKFLOW_CELERY_TEST_REDIS_DBS", "3-15").split("-"))
_redis_db = itertools.cycle(range(_first, _last + 1))


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """The URL of the next Redis database of the suite's range, empty at start and emptied at the end."""
    url = f"{REDIS_URL}/{next(_redis_db)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


# Virtual hosts are named after the pytest process, so a later run can tell the leftovers of a killed one.
_VHOST_PREFIX = "wfc_test_"
_VHOST_NAME = re.compile(rf"^{_VHOST_PREFIX}(\d+)_[0-9a-f]+$")
_stale_vhosts_removed = False


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS``; its output. Fails the test with the tool's own words."""
    try:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        pytest.fail("rabbitmqctl is not installed: scripts/services installs and starts RabbitMQ")
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return done.stdout


def _remove_stale_vhosts() -> None:
    global _stale_vhosts_removed
    if _stale_vhosts_removed:
        return
    _stale_vhosts_removed = True
    for name in rabbitmqctl("list_vhosts", "name").split():
        found = _VHOST_NAME.match(name)
        if found and not Path(f"/proc/{found.group(1)}").exists():
            rabbitmqctl("delete_vhost", name)


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """The URL of a RabbitMQ virtual host created for the caller, deleted with everything in it at the end."""
    _remove_stale_vhosts()
    vhost = f"{_VHOST_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    user = unquote(urlsplit(RABBITMQ_URL).username or "guest")
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield f"{RABBITMQ_URL.rstrip('/')}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """The broker the test runs on: ``redis`` or ``rabbitmq``."""
    return str(request.param)


@pytest.fixture
def broker_url(broker: str) -> Iterator[str]:
    """A broker of the test's own: a Redis database, or a RabbitMQ virtual host."""
    with redis_database() if broker == "redis" else rabbitmq_vhost() as url:
        yield url


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output()}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def kill_hard(self) -> None:
        """SIGKILL the main process and every pool child: nothing gets to clean up."""
        pids = [self.proc.pid, *self.children()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill_hard()


@pytest.fixture
def start_worker(tmp_path: Path, broker_url: str, pg_database: str) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(
        app: str,
        queues: str | None,
        *,
        args: Sequence[str] = (),
        concurrency: int = 2,
        pool: str = "prefork",
        env: dict[str, str] | None = None,
        wait: bool = True,
        name: str | None = None,
    ) -> Worker:
        node = name or f"w{len(workers)}-{uuid.uuid4().hex[:4]}"
        log = tmp_path / f"{node}.log"
        full_env = {
            **os.environ,
            "CELERY_BROKER_URL": broker_url,
            "WORKFLOW_CELERY_DATABASE_URL": pg_database,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            *(["-Q", queues] if queues is not None else []),
            *args,
            "-c",
            str(concurrency),
            "--pool",
            pool,
            "-n",
            f"{node}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(proc, log)
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    # The test has run: nothing is left for its workers to finish, and a warm shutdown costs seconds each.
    for w in workers:
        if w.proc.poll() is None:
            w.kill_hard()


@pytest.fixture
def store(pg_database: str) -> Iterator[SQLStore]:
    s = SQLStore(pg_database)
    s.create_schema()
    yield s
    s.dispose()


@pytest.fixture
def orders(broker_url: str, store: SQLStore, pg_database: str) -> Iterator[Workflow[Order, OrderStatus]]:
    """The order workflow as the application side sees it (publishes to the test's broker)."""
    # The same definition as the workers (hooks included): whoever commits a change rings its hooks.
    notifications = Notifications(pg_database)
    yield order_workflow(notifications).build(client_app(broker_url), store)
    notifications.dispose()
