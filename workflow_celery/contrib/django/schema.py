"""The store's schema moved by Django migrations: one ``RunPython`` per store revision.

Each runs alembic on the connection of ``manage.py migrate``, in its
transaction, and only on the database the store uses
(``WORKFLOW_CELERY["DATABASE"]``), when it is PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

from ...adapters.sql import migrate
from .borrowed import borrowed, lending_engine
from .settings import database_alias


def _ours(schema_editor: Any) -> bool:
    connection = schema_editor.connection
    return bool(connection.alias == database_alias() and connection.vendor == "postgresql")


def store_revision(revision: str, previous: str) -> migrations.RunPython:
    """A migration step taking the store's schema to ``revision``, and back to ``previous`` when reversed."""

    def forwards(_apps: Any, schema_editor: Any) -> None:
        if _ours(schema_editor):
            with borrowed(lending_engine(), schema_editor.connection) as conn:
                migrate.upgrade_in(conn, revision)

    def backwards(_apps: Any, schema_editor: Any) -> None:
        if _ours(schema_editor):
            with borrowed(lending_engine(), schema_editor.connection) as conn:
                migrate.downgrade_in(conn, previous)

    return migrations.RunPython(forwards, backwards)
