"""A Celery app whose workflows are built in a task module it only names (``include``), as Django projects do.

    celery -A tests.acceptance.pluginapp workflow runs list

Importing this module builds nothing: the workflow appears once Celery
imports the app's task modules, as a worker does at startup.
"""

from __future__ import annotations

from celery import Celery

import celeryconfig

app = Celery("pluginapp", include=["tests.acceptance.pluginapp_workflows"])
app.config_from_object(celeryconfig)
