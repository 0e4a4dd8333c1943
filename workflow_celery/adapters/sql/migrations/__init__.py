"""Alembic migrations of the SQL record store (run through ``workflow_celery.adapters.sql.migrate``)."""
