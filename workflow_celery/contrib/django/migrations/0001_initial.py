"""The workflow tables: the store's own migrations, run in the transaction of ``manage.py migrate``."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from ....adapters.sql import migrate
from ..borrowed import borrowed, lending_engine
from ..models import RUN_STATE_CHOICES
from ..settings import database_alias


def _ours(schema_editor: Any) -> bool:
    connection = schema_editor.connection
    return bool(connection.alias == database_alias() and connection.vendor == "postgresql")


def create_tables(_apps: Any, schema_editor: Any) -> None:
    if _ours(schema_editor):
        with borrowed(lending_engine(), schema_editor.connection) as conn:
            migrate.upgrade_in(conn)


def drop_tables(_apps: Any, schema_editor: Any) -> None:
    if _ours(schema_editor):
        with borrowed(lending_engine(), schema_editor.connection) as conn:
            migrate.downgrade_in(conn)


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.RunPython(create_tables, drop_tables),
        migrations.CreateModel(
            name="Run",
            fields=[
                ("run_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("workflow_name", models.TextField(verbose_name="workflow")),
                ("foreign_id", models.TextField()),
                ("run_state", models.IntegerField(choices=RUN_STATE_CHOICES)),
                ("status", models.IntegerField()),
                ("object", models.TextField()),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("version", models.IntegerField()),
                ("run_state_reason", models.TextField()),
                ("status_description", models.TextField()),
                ("trace_origin", models.TextField()),
            ],
            options={
                "verbose_name": "run",
                "db_table": "workflow_records",
                "ordering": ["-created_at"],
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
