"""``workflow-celery ui``: the web UI for runs, on its own, behind a token.

workflow-celery -A examples.orders ui [--port 8089] [--addr 127.0.0.1] [--flower http://127.0.0.1:5555]

The token is ``$WORKFLOW_CELERY_UI_TOKEN``, or a new one printed at start.
Needs Flask (``pip install 'workflow-celery[ui]'``). The server is
Werkzeug's, threaded: for more than a few operators, run
``workflow_celery.ui.flask:app_from_env()`` under gunicorn instead.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

from .common import CliError, find_workflows, positive

DEFAULT_PORT = 8089


def add_commands(sub: Any) -> None:
    """Add ``ui`` to the command's sub-parsers."""
    ui = sub.add_parser("ui", help="serve the web UI for runs (token login; localhost by default)")
    ui.add_argument("--port", type=positive, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ui.add_argument("--addr", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    ui.add_argument("--flower", default="", help="Flower's URL, to link each task to its page there")
    ui.add_argument("--no-mermaid-js", action="store_true", help="show graphs as mermaid text, load no script")
    ui.set_defaults(func=cmd_ui, needs_app=True)


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from werkzeug.serving import run_simple

        from ..ui.flask import TOKEN_ENV, create_app
        from ..ui.pages import DEFAULT_MERMAID_JS
    except ImportError as exc:
        raise CliError(f"the web UI needs Flask: pip install 'workflow-celery[ui]' ({exc})") from None
    workflows = list(find_workflows(args.app).values())
    if not workflows:
        raise CliError("the app builds no workflow")
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    app = create_app(
        workflows, token, flower_url=args.flower, mermaid_js="" if args.no_mermaid_js else DEFAULT_MERMAID_JS,
        secret_key=os.environ.get("WORKFLOW_CELERY_UI_SECRET"),
    )  # fmt: skip
    try:
        workflows[0].store.list_runs(workflows[0].name, limit=1)
    except Exception as exc:
        # Serve anyway (the database may come back); its pages answer 503 until then.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warning: the database cannot be read: {first_line}", file=sys.stderr, flush=True)
    print(f"workflow-celery UI for {', '.join(wf.name for wf in workflows)} on http://{args.addr}:{args.port}/")
    if TOKEN_ENV not in os.environ:
        print(f"log in with the token {token} (set ${TOKEN_ENV} to choose it)", flush=True)
    run_simple(args.addr, args.port, app, threaded=True, use_reloader=False)
    return 0
