"""The operator's web UI for runs: list, run page, actions, bulk resume, graphs with counts.

``RunsUI`` renders the pages and performs the actions, whatever serves them:
``workflow_celery.ui.flask`` (a blueprint for a Flask app, and the standalone
``workflow-celery ui`` server) and ``workflow_celery.contrib.django.ui``
(URLs for a Django project). See ``docs/ui.md``.
"""

from __future__ import annotations

from .pages import Page, Redirect, RunsUI, UIRequest

__all__ = ["Page", "Redirect", "RunsUI", "UIRequest"]
