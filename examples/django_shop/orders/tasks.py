"""Found by ``app.autodiscover_tasks()``: importing the workflow registers its tasks, so workers run its steps."""

from orders.workflows import wf

__all__ = ["wf"]
