"""Found by ``app.autodiscover_tasks()``: importing it builds the project's workflows."""

from shop.workflows import wf

__all__ = ["wf"]
