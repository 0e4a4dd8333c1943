"""The web UI on Flask: a blueprint for your Flask app, and the standalone app of ``workflow-celery ui``.

Mounted in your app (its own login decides who may look)::

    from flask_login import current_user
    from workflow_celery.ui.flask import blueprint

    app.register_blueprint(
        blueprint(workflows, authorize=lambda: current_user.is_authenticated and current_user.email),
        url_prefix="/workflows",
    )

Standalone, behind a token: ``workflow-celery -A shop ui`` (see ``create_app``).
Every state-changing request carries a token kept in Flask's signed session
(so the app needs a ``SECRET_KEY``); a request without it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, redirect, request, session, url_for

from ..core.errors import ConfigurationError
from ..core.workflow import Workflow
from .pages import DATABASE_ERRORS, DEFAULT_MERMAID_JS, Page, Redirect, RunsUI, UIRequest, security_headers

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
_CSRF_KEY = "workflow_celery_ui_csrf"
_USER_KEY = "workflow_celery_ui_user"
_TOKEN_KEY = "workflow_celery_ui_token"
SESSION_HOURS = 8
TOKEN_ENV = "WORKFLOW_CELERY_UI_TOKEN"

Authorize = Callable[[], Any]
"""Returns who the user is (a name, or anything true) or something false to refuse the request."""


def blueprint(
    workflows: Sequence[Workflow[Any, Any]],
    *,
    authorize: Authorize,
    may_change: Callable[[], bool] | None = None,
    flower_url: str = "",
    mermaid_js: str = DEFAULT_MERMAID_JS,
    login_url: Callable[[], str] | None = None,
    logout_url: Callable[[], str] | None = None,
    csrf_exempt: Callable[[], bool] | None = None,
    name: str = "workflow_ui",
) -> Blueprint:
    """The UI as a blueprint. ``authorize`` is required: nothing is shown to a request it refuses (401, or a
    redirect to ``login_url()``). ``may_change`` (default: everyone let in) decides who may pause, resume,
    cancel, delete data and resume in bulk. ``csrf_exempt()`` may let a request through without the form's
    CSRF token: only for credentials a browser never sends on its own (an ``Authorization`` header)."""
    if not callable(authorize):
        raise ConfigurationError("blueprint(authorize=...) must be a function saying who the user is")
    ui = RunsUI(workflows, flower_url=flower_url, mermaid_js=mermaid_js, secret=lambda: current_app.secret_key)
    bp = Blueprint(name, __name__)

    def ui_request() -> UIRequest:
        base = url_for(f"{bp.name}.index").rstrip("/")
        user = authorize()
        return UIRequest(
            base=base, query=request.args.to_dict(), form=request.form.to_dict() if request.method == "POST" else {},
            csrf_name=CSRF_FIELD, csrf_value=_csrf_token(), may_change=bool(may_change() if may_change else True),
            user=user if isinstance(user, str) else "", logout_url=logout_url() if logout_url else "",
        )  # fmt: skip

    @bp.before_request
    def guard() -> Any:
        if not authorize():
            if login_url is not None:
                return redirect(login_url())
            abort(401)
        if request.method == "POST" and not (csrf_exempt and csrf_exempt()):
            _check_csrf()
        return None

    @bp.after_request
    def headers(response: Response) -> Response:
        return _secure(response, mermaid_js)

    def database_down(exc: Exception) -> Any:
        log.error("the web UI could not read the database", exc_info=exc)
        return _respond(ui.unavailable(ui_request()))

    for error in DATABASE_ERRORS:
        bp.register_error_handler(error, database_down)

    @bp.get("/")
    def index() -> Any:
        return redirect(url_for(f"{bp.name}.runs"))

    @bp.get("/runs")
    def runs() -> Any:
        return _respond(ui.runs(ui_request()))

    @bp.get("/runs/<run_id>")
    def run(run_id: str) -> Any:
        return _respond(ui.run(ui_request(), run_id))

    @bp.get("/runs/<run_id>/<action>")
    def confirm(run_id: str, action: str) -> Any:
        return _respond(ui.confirm(ui_request(), run_id, action))

    @bp.post("/runs/<run_id>/<action>")
    def act(run_id: str, action: str) -> Any:
        return _respond(ui.act(ui_request(), run_id, action))

    @bp.route("/bulk", methods=["GET", "POST"])
    def bulk() -> Any:
        return _respond(ui.bulk(ui_request()))

    @bp.get("/graph/<workflow>")
    def graph(workflow: str) -> Any:
        return _respond(ui.graph(ui_request(), workflow))

    return bp


def _secure(response: Response, mermaid_js: str) -> Response:
    response.headers.update(security_headers(mermaid_js))
    return response


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of two texts, whatever characters they hold (``compare_digest`` on bytes)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _csrf_token() -> str:
    token = session.get(_CSRF_KEY)
    if not token:
        token = session[_CSRF_KEY] = secrets.token_urlsafe(32)
    return str(token)


def _check_csrf() -> None:
    """Refuse (400) a POST whose form does not carry the session's CSRF token."""
    sent = request.form.get(CSRF_FIELD, "")
    if not sent or not _same(sent, str(session.get(_CSRF_KEY, ""))):
        abort(400, "the form's CSRF token is missing or wrong: reload the page and try again")


def _respond(result: Page | Redirect) -> Any:
    if isinstance(result, Redirect):
        return redirect(result.location, code=303)
    return Response(result.html, status=result.status, content_type="text/html; charset=utf-8")


def create_app(
    workflows: Sequence[Workflow[Any, Any]],
    token: str,
    *,
    flower_url: str = "",
    mermaid_js: str = DEFAULT_MERMAID_JS,
    secret_key: str | None = None,
) -> Flask:
    """The standalone UI: a login page asking for ``token``, then the UI at ``/``.

    ``Authorization: Bearer <token>`` is accepted as well (for scripts). The
    session cookie is signed with ``secret_key``, by default a key derived
    from the token, so that every process serving the UI (a WSGI server's
    workers) shares it. A session lasts ``SESSION_HOURS`` at most and ends
    when the token changes.
    """
    if not token or len(token) < 16:
        raise ConfigurationError("the UI's token must be at least 16 characters")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key or hashlib.sha256(f"workflow-celery ui session key\n{token}".encode()).hexdigest(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    # Which token a session logged in with: another token (a new one at a restart) ends it.
    token_mark = hashlib.sha256(f"workflow-celery ui token\n{token}".encode()).hexdigest()[:16]

    def bearer() -> bool | None:
        """True or False for a request with a bearer token (right or wrong), None without one."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
            return None
        return _same(given.strip(), token)

    def authorized() -> Any:
        given = bearer()
        if given is False:
            abort(401)  # a script with the wrong token: no login page for it
        if given:
            return "token"
        return session.get(_USER_KEY) if session.get(_TOKEN_KEY) == token_mark else None

    @app.get("/login")
    def login_form() -> Any:
        return _login_page(_csrf_token(), "")

    @app.post("/login")
    def login() -> Any:
        _check_csrf()
        if not _same(request.form.get("token", ""), token):
            return _login_page(_csrf_token(), "That is not the token."), 401
        session.permanent = True  # expires after SESSION_HOURS, rather than when the browser closes
        session[_USER_KEY] = "operator"
        session[_TOKEN_KEY] = token_mark
        return redirect(url_for("workflow_ui.runs"), code=303)

    @app.post("/logout")
    def logout() -> Any:
        _check_csrf()
        session.pop(_USER_KEY, None)
        session.pop(_TOKEN_KEY, None)
        return redirect(url_for("login_form"), code=303)

    @app.after_request
    def headers(response: Response) -> Response:
        return _secure(response, mermaid_js)  # the login page too, which is not the blueprint's

    app.register_blueprint(
        blueprint(
            workflows, authorize=authorized, flower_url=flower_url, mermaid_js=mermaid_js,
            login_url=lambda: url_for("login_form"), logout_url=lambda: "" if bearer() else url_for("logout"),
            csrf_exempt=lambda: bearer() is True,
        ),
        url_prefix="",
    )  # fmt: skip
    return app


def _login_page(csrf: str, message: str) -> str:
    from markupsafe import escape

    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Log in · workflow-celery</title>"
        "<body style='font:14px system-ui;margin:40px'><h1>workflow-celery</h1>"
        f"{note}<form method=post action=login><input type=hidden name={CSRF_FIELD} value='{escape(csrf)}'>"
        "<label>Token <input name=token type=password autofocus size=50></label> <button type=submit>Log in</button>"
        "</form><p>The token is the one <code>workflow-celery ui</code> printed, or $"
        f"{TOKEN_ENV}.</p></body></html>"
    )


def app_from_env() -> Flask:
    """The standalone app for a WSGI server: the workflows of ``$WORKFLOW_CELERY_APP``, the token of
    ``$WORKFLOW_CELERY_UI_TOKEN``: ``gunicorn 'workflow_celery.ui.flask:app_from_env()'``."""
    from ..cli.common import APP_ENV, find_workflows

    module, token = os.environ.get(APP_ENV), os.environ.get(TOKEN_ENV)
    if not module or not token:
        raise ConfigurationError(f"set {APP_ENV} (the module that builds your workflows) and {TOKEN_ENV}")
    return create_app(
        list(find_workflows(module).values()), token, secret_key=os.environ.get("WORKFLOW_CELERY_UI_SECRET")
    )
