"""The order workflow on Celery and PostgreSQL.

    celery -A examples.orders worker -Q 'order-processing.*' --loglevel=INFO

Broker and database come from ``celeryconfig`` (environment variables
``CELERY_BROKER_URL`` and ``WORKFLOW_CELERY_DATABASE_URL``).
"""

from __future__ import annotations

from celery import Celery

import celeryconfig
from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import SQLStore

app = Celery("orders")
app.config_from_object("celeryconfig")

store = SQLStore(celeryconfig.workflow_database_url)
wf = order_workflow().build(app, store)

__all__ = ["Order", "OrderStatus", "app", "store", "wf"]
