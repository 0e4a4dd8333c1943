"""The workflow tables: the store's own migrations, run in the transaction of ``manage.py migrate``.

Each Django migration takes the store's schema to a fixed revision, so an
installation that applied this one before later revisions existed gets them
from the later Django migrations.
"""

from __future__ import annotations

from django.db import migrations, models

from ..models import RUN_STATE_CHOICES
from ..schema import store_revision


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        store_revision("0004", "base"),
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
