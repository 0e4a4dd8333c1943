"""Integrations with web frameworks: ``workflow_celery.contrib.flask``."""
