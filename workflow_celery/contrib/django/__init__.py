"""Django app: runs written in Django's transactions, tables by ``migrate``, an admin, ``manage.py workflow``.

Add ``"workflow_celery.contrib.django"`` to ``INSTALLED_APPS``, name the
module that builds your workflows and build them on a ``DjangoStore``::

    WORKFLOW_CELERY = {"APP": "shop.workflows"}      # and "DATABASE": an alias of DATABASES ("default")

    # shop/workflows.py
    wf = builder.build(app, DjangoStore())

``manage.py migrate`` creates the tables; inside ``transaction.atomic()``
``trigger`` and the run-control calls write in Django's transaction and
publish on commit (``DjangoStore``); the admin lists runs under "Workflows";
``python manage.py workflow runs list`` runs every command of
``workflow-celery`` without ``-A``. In the standard Django + Celery layout
(``proj/celery.py`` with ``app.autodiscover_tasks()``) ``celery -A proj
workflow …`` works as well. See ``docs/django.md``.
"""

from __future__ import annotations

from .settings import SETTING, app_module, database_alias
from .store import DjangoStore

__all__ = ["SETTING", "DjangoStore", "app_module", "database_alias"]
