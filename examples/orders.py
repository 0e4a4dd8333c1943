"""The order workflow on Celery and PostgreSQL.

    celery -A examples.orders worker -Q 'order-processing.*' --loglevel=INFO
    celery -A examples.orders worker -Q 'order-processing.hooks.*'    # hooks only

Broker and database come from ``celeryconfig`` (environment variables
``CELERY_BROKER_URL`` and ``WORKFLOW_CELERY_DATABASE_URL``).
"""

from __future__ import annotations

from celery import Celery

import celeryconfig
from examples.notifications import Notifications
from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import SQLStore

app = Celery("orders")
app.config_from_object("celeryconfig")

store = SQLStore(celeryconfig.workflow_database_url)
# An example may create its tables on import; an application runs `workflow-celery db upgrade` once instead.
store.create_schema()
notifications = Notifications(celeryconfig.workflow_database_url)
wf = order_workflow(notifications).build(app, store)

__all__ = ["Order", "OrderStatus", "app", "notifications", "store", "wf"]
