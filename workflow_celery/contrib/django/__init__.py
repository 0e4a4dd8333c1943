"""Django app: ``manage.py workflow …`` on the project's workflows.

Add ``"workflow_celery.contrib.django"`` to ``INSTALLED_APPS`` and name the
module that builds your workflows::

    WORKFLOW_CELERY = {"APP": "shop.workflows"}

then ``python manage.py workflow runs list`` (and every other command of
``workflow-celery``, without ``-A``). In the standard Django + Celery layout
(``proj/celery.py`` with ``app.autodiscover_tasks()``) ``celery -A proj
workflow …`` works as well: Celery sets Django up and imports the task
modules that build the workflows.
"""

from __future__ import annotations

from typing import Any

SETTING = "WORKFLOW_CELERY"


def app_module() -> str | None:
    """``settings.WORKFLOW_CELERY["APP"]``, the module that builds the project's workflows (None if unset).

    Raises ``ConfigurationError`` when the setting is not a dict with a string ``APP``.
    """
    from django.conf import settings

    from ...core.errors import ConfigurationError

    config: Any = getattr(settings, SETTING, None)
    if config is None:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("APP", ""), str):
        raise ConfigurationError(f'settings.{SETTING} must be a dict like {{"APP": "shop.workflows"}}, got {config!r}')
    app = config.get("APP")
    return app or None
