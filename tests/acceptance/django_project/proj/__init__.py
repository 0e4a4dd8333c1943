"""A Django project in the layout Celery's documentation teaches ("First steps with Django")."""

from .celery import app as celery_app

__all__ = ("celery_app",)
