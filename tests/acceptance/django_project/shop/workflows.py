"""The order workflow, built on the project's Celery app and a store on the project's database."""

import os

from proj.celery import app

from examples.order_processing import Order, OrderStatus, order_workflow
from workflow_celery import SQLStore

store = SQLStore(os.environ["WORKFLOW_CELERY_DATABASE_URL"])
wf = order_workflow().build(app, store)

__all__ = ["Order", "OrderStatus", "store", "wf"]
