"""Schema migrations of the SQL record store, driven from code.

Users never need an ``alembic.ini``: ``upgrade(url)`` brings a database to the
newest revision and ``current(url)`` says where it stands. The revisions live
inside the package (``workflow_celery/sql/migrations``) and record their state
in their own version table, so they coexist with an application's alembic.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine

from .schema import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

ADVISORY_LOCK_KEY = 0x77666365_6C657279
"""``pg_advisory_xact_lock`` key serialising concurrent upgrades ("wfcelery" in ASCII)."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    # ConfigParser interpolates "%", which may occur in an installation path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _engine(engine_or_url: Engine | str) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    from .engine import make_engine

    engine = make_engine(engine_or_url, pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default); a no-op when already there.

    The whole upgrade is one transaction (both dialects have transactional
    DDL). On PostgreSQL it first takes a transaction-level advisory lock, so
    processes starting together run it one after another and the later ones
    find nothing left to do; on SQLite ``BEGIN IMMEDIATE`` has the same effect.
    """
    with _engine(engine_or_url) as engine, engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Even on an autocommit engine: the lock and the DDL must share one transaction.
            conn.execution_options(isolation_level="READ COMMITTED")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        upgrade_in(conn, revision)
        conn.commit()


def upgrade_script(url: URL, revision: str = "head", output: TextIO | None = None) -> None:
    """Write the SQL of the upgrade from an empty database to ``revision`` (alembic's offline mode) to ``output``.

    Nothing connects to the database: ``url`` only picks the dialect. The
    script includes the version table's own statements, so running it leaves
    the database where ``upgrade`` would.
    """
    config = _config()
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=True).replace("%", "%%"))
    config.output_buffer = output or sys.stdout
    command.upgrade(config, revision, sql=True)


def upgrade_in(conn: Connection, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in ``conn``'s transaction, which the caller commits.

    How a framework's own migrations (Django's ``migrate``) create the
    tables: atomic with the framework's record of having applied them.
    """
    _lock(conn)
    # The connection is already in a transaction, so alembic leaves it to the caller to commit.
    command.upgrade(_config(conn), revision)


def downgrade_in(conn: Connection, revision: str = "base") -> None:
    """Downgrade the database to ``revision`` (no tables at ``base``) in ``conn``'s transaction."""
    _lock(conn)
    command.downgrade(_config(conn), revision)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def current(engine_or_url: Engine | str) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    with _engine(engine_or_url) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head() -> str:
    """The newest revision shipped with this version of the package."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return revision
