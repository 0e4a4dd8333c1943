"""The project's settings without ``WORKFLOW_CELERY``."""

from proj.settings import *  # noqa: F403

del WORKFLOW_CELERY  # noqa: F821
