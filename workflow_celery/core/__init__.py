"""The engine's core: pure Python, no Celery, no SQLAlchemy, no threads and no process globals.

Adapters (``workflow_celery.adapters``: SQL, memory, Celery, in-process,
Prometheus) implement the ports declared in :mod:`workflow_celery.core.ports`;
the threads a worker process runs live in :mod:`workflow_celery.runtime`.
"""
