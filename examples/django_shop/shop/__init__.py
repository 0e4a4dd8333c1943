"""The shop's Django project, laid out as Celery's "First steps with Django" teaches."""

from .celery import app as celery_app

__all__ = ("celery_app",)
