"""Alembic environment of the record store.

Configured from code (``workflow_celery.adapters.sql.migrate``), never from an
``alembic.ini``: the caller hands over an open connection in
``config.attributes["connection"]`` and owns its transaction, so the
PostgreSQL advisory lock taken around the upgrade is held until it commits.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from workflow_celery.adapters.sql.schema import VERSION_TABLE, metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    if context.is_offline_mode():
        # ``alembic upgrade --sql`` renders a script for a DBA to review.
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("workflow_celery migrations need a connection or sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
