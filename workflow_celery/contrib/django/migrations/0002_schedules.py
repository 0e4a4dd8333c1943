"""The tables of ``wf.schedule``: the store's schema revision 0005."""

from __future__ import annotations

from django.db import migrations

from ..schema import store_revision


class Migration(migrations.Migration):
    dependencies = [("workflow_celery", "0001_initial")]

    operations = [store_revision("0005", "0004")]
