"""The task module of ``tests.acceptance.pluginapp``: the order workflow, built on its app."""

from __future__ import annotations

import celeryconfig
from examples.order_processing import order_workflow
from tests.acceptance.pluginapp import app
from workflow_celery import SQLStore

wf = order_workflow().build(app, SQLStore(celeryconfig.workflow_database_url))
