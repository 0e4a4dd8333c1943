"""Adapters: the ports of ``workflow_celery.core`` implemented on real technology.

- ``sql``: the record store on PostgreSQL and SQLite (SQLAlchemy, alembic);
- ``memory``: the record store in memory, the reference for tests;
- ``celery``: doorbells as Celery tasks, and what a Celery worker runs besides;
- ``inprocess``: a broker and workers inside one process, for tests and the demo;
- ``prometheus``: metrics for Prometheus.
"""
