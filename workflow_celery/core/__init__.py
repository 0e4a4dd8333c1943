"""The engine's core: pure Python, no Celery and no SQLAlchemy.

Adapters (``workflow_celery.sql``, ``workflow_celery.celery_adapter``,
``workflow_celery.inprocess``) implement the ports declared in
:mod:`workflow_celery.core.ports`.
"""
