"""The Django app configuration of ``workflow_celery.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class WorkflowCeleryConfig(AppConfig):
    name = "workflow_celery.contrib.django"
    label = "workflow_celery"
    verbose_name = "Workflows"
