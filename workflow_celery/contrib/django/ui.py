"""The web UI for runs in a Django project: staff only, Django's login and CSRF protection.

    # urls.py
    path("workflows/", include("workflow_celery.contrib.django.ui")),

Every page needs a staff user (``staff_member_required``: the admin's login)
with the permission the admin asks to show runs, ``workflow_celery.view_run``
(or ``change_run``); pausing, resuming, cancelling and deleting data need the
permission the admin's actions need, ``workflow_celery.change_run``. Forms carry Django's
CSRF token and ``CsrfViewMiddleware`` checks it. Settings
``WORKFLOW_CELERY["UI_FLOWER_URL"]`` (Flower's URL, to link tasks) and
``WORKFLOW_CELERY["UI_MERMAID_JS"]`` (the script drawing graphs; empty:
text only) are optional. See ``docs/ui.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from ...ui.pages import DATABASE_ERRORS, DEFAULT_MERMAID_JS, Page, Redirect, RunsUI, UIRequest, security_headers
from .admin import workflows

log = logging.getLogger(__name__)

app_name = "workflow_celery_ui"
PERMISSION = "workflow_celery.change_run"
VIEW_PERMISSION = "workflow_celery.view_run"


@lru_cache(maxsize=1)
def _ui() -> RunsUI:
    options = getattr(settings, "WORKFLOW_CELERY", {}) or {}
    return RunsUI(
        list(workflows().values()),
        flower_url=str(options.get("UI_FLOWER_URL", "")),
        mermaid_js=str(options.get("UI_MERMAID_JS", DEFAULT_MERMAID_JS)),
        secret=lambda: str(settings.SECRET_KEY),
    )


def _request(request: HttpRequest) -> UIRequest:
    base = reverse(f"{app_name}:runs").removesuffix("/runs")
    user: Any = request.user
    return UIRequest(
        base=base.rstrip("/"), query=request.GET.dict(),
        form=request.POST.dict() if request.method == "POST" else {},
        csrf_name="csrfmiddlewaretoken", csrf_value=get_token(request),
        may_change=bool(user.has_perm(PERMISSION)), user=str(user.get_username()),
    )  # fmt: skip


def _respond(result: Page | Redirect) -> HttpResponse:
    if isinstance(result, Redirect):
        response: HttpResponse = HttpResponseRedirect(result.location)
        response.status_code = 303
        return response
    response = HttpResponse(result.html, status=result.status, content_type="text/html; charset=utf-8")
    for name, value in security_headers(_ui().mermaid_js).items():
        response[name] = value
    return response


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect(reverse(f"{app_name}:runs"))


def runs(request: HttpRequest) -> HttpResponse:
    return _respond(_ui().runs(_request(request)))


def run(request: HttpRequest, run_id: str) -> HttpResponse:
    return _respond(_ui().run(_request(request), run_id))


def action(request: HttpRequest, run_id: str, action: str) -> HttpResponse:
    ui = _ui()
    if request.method == "POST":
        return _respond(ui.act(_request(request), run_id, action))
    return _respond(ui.confirm(_request(request), run_id, action))


def bulk(request: HttpRequest) -> HttpResponse:
    return _respond(_ui().bulk(_request(request)))


def graph(request: HttpRequest, workflow: str) -> HttpResponse:
    return _respond(_ui().graph(_request(request), workflow))


View = Callable[..., HttpResponse]


def _staff(view: View, *methods: str) -> View:
    def viewer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user: Any = request.user
        if not (user.has_perm(VIEW_PERMISSION) or user.has_perm(PERMISSION)):
            # The admin shows runs to those with the view permission only: so does the UI.
            refusal = f"seeing runs needs the permission {VIEW_PERMISSION}"
            return _respond(_ui().refused(_request(request), refusal, may_see=False))
        try:
            return view(request, *args, **kwargs)
        except DATABASE_ERRORS as exc:
            log.error("the web UI could not read the database", exc_info=exc)
            return _respond(_ui().unavailable(_request(request)))

    # Django ships no type hints: its decorators, typed.
    return cast(View, staff_member_required(require_http_methods(list(methods))(viewer)))


urlpatterns = [
    path("", _staff(index, "GET"), name="index"),
    path("runs", _staff(runs, "GET"), name="runs"),
    path("runs/<str:run_id>", _staff(run, "GET"), name="run"),
    path("runs/<str:run_id>/<str:action>", _staff(action, "GET", "POST"), name="action"),
    path("bulk", _staff(bulk, "GET", "POST"), name="bulk"),
    path("graph/<str:workflow>", _staff(graph, "GET"), name="graph"),
]
