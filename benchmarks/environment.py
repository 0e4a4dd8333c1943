"""The services a benchmark runs on (a fresh PostgreSQL database, one Redis db) and the machine."""

from __future__ import annotations

import os
import platform
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import redis
import sqlalchemy as sa

DEFAULT_PG_ADMIN_URL = os.environ.get("WORKFLOW_CELERY_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
_SETTING = re.compile(r"[A-Za-z0-9_.]+")
DEFAULT_REDIS_URL = os.environ.get("WORKFLOW_CELERY_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@contextmanager
def fresh_database(admin_url: str, label: str, settings: Mapping[str, str] | None = None) -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its URL, drop it (even if workers still hold connections).

    ``settings`` become the database's own defaults (``ALTER DATABASE ... SET``),
    so trying ``synchronous_commit = off`` never touches the server's configuration.
    """
    name = f"wfc_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            with admin.connect() as conn:
                for key, value in (settings or {}).items():
                    # SET takes no bind parameters, so both parts are checked before they reach the SQL.
                    if not _SETTING.fullmatch(key) or not _SETTING.fullmatch(value):
                        raise ValueError(f"refusing PostgreSQL setting {key!r} = {value!r}")
                    conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'"))
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            _drop_database(admin, name)
    finally:
        admin.dispose()


def _drop_database(admin: sa.Engine, name: str, attempts: int = 5) -> None:
    # The server may have been restarted under us (pooled admin connections then
    # fail once); a database left behind would outlive the benchmark.
    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa.exc.OperationalError:
            if attempt == attempts - 1:
                raise
            admin.dispose()
            time.sleep(1.0)


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(admin_url: str, redis_url: str) -> dict[str, Any]:
    """What the figures depend on: CPUs, load, and the versions of everything on the path."""
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            pg_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            pg_settings = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
            }
    finally:
        engine.dispose()
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = client.info("server").get("redis_version", "unknown")
    finally:
        client.close()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "redis_py": _version("redis"),
        "sqlalchemy": _version("SQLAlchemy"),
        "psycopg": _version("psycopg"),
        "pydantic": _version("pydantic"),
        "workflow_celery": _version("workflow-celery"),
        "postgresql": pg_version,
        "postgresql_settings": pg_settings,
        "redis_server": redis_version,
    }
