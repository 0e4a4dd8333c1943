"""``RunsUI``: every page of the web UI and every action, as functions of a request, for any web framework.

An adapter turns its framework's request into a ``UIRequest`` (the path's
parameters, the query, the form, the CSRF field to embed and whether the
user may change runs) and a ``Page`` or ``Redirect`` back into a response.
Templates are Jinja2 with autoescaping: nothing from a run is written
unescaped.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.exc import DBAPIError

from ..core import run_actions
from ..core.doorbell import task_id
from ..core.errors import DatabaseConnectionLost, InvalidRunStateTransition, RecordNotFound
from ..core.lag import WaitingRuns
from ..core.record import Record
from ..core.run_state import RunState
from ..core.text import check_foreign_id
from ..core.workflow import Workflow
from . import bulk
from .values import at, duration, when, whole_number

DATABASE_DOWN = "the database did not answer: try again in a moment (the server's log says why)"
DATABASE_ERRORS: tuple[type[Exception], ...] = (DatabaseConnectionLost, DBAPIError)
"""What a store raises when its database does not answer: each adapter shows ``RunsUI.unavailable`` for it."""
PAGE_SIZE = 50
HISTORY_SHOWN = 100
ACTIONS = {"pause": "Pause", "resume": "Resume", "cancel": "Cancel", "delete-data": "Delete the data of"}
MAX_PAGE = (2**31 - 1) // PAGE_SIZE
RUN_ID_LENGTH = 64
"""The longest run id a store keeps (the SQL store's column): a longer one names no run."""
PREFIX_MIN = 4
"""A run id's start this long or longer finds the run, as on the command line."""
LIVE_SECONDS = 5
DEFAULT_MERMAID_JS = "https://cdn.jsdelivr.net/npm/mermaid@11.4.1/dist/mermaid.min.js"
"""The script that draws the graphs in the browser; without it (``""``) the diagram shows as mermaid text."""
DEFAULT_MERMAID_INTEGRITY = "sha384-rbtjAdnIQE/aQJGEgXrVUlMibdfTSa4PQju4HDhN3sR2PmaKFzhEafuePsl9H/9I"  # its npm file


def security_headers(mermaid_js: str) -> dict[str, str]:
    """The headers every page of the UI is sent with: no framing, no sniffing, scripts from known places only."""
    script = urlsplit(mermaid_js)
    script_src = f"{script.scheme}://{script.netloc}" if script.netloc else "'self'"
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' {script_src}; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


@dataclass(frozen=True)
class UIRequest:
    """What a page needs of a request, whatever the framework."""

    base: str
    """The URL prefix the UI is mounted at, without a trailing slash (``""`` at the root)."""
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    csrf_name: str = ""
    csrf_value: str = ""
    may_change: bool = True
    """Whether the user may pause, resume, cancel and delete (a host's permission)."""
    user: str = ""
    logout_url: str = ""
    """Where a logout form posts, when the UI has its own login."""


@dataclass(frozen=True)
class Page:
    html: str
    status: int = 200


@dataclass(frozen=True)
class Redirect:
    location: str


Response = Page | Redirect


class RunsUI:
    """The pages of the workflows it is given. ``flower_url``: where Flower is, to link each task to it."""

    def __init__(
        self,
        workflows: Sequence[Workflow[Any, Any]],
        *,
        flower_url: str = "",
        mermaid_js: str = "",
        secret: Callable[[], str | bytes | None] | None = None,
    ) -> None:
        self.workflows = {wf.name: wf for wf in sorted(workflows, key=lambda w: w.name)}
        # Signs the result of a bulk resume carried by the redirect, so that a link cannot show a made-up one:
        # with the host's secret key (its processes share it), else with one of this process'.
        self._secret = secret
        self._own_secret = secrets.token_bytes(32)
        self.flower_url = flower_url.rstrip("/")
        self.mermaid_js = mermaid_js
        self.env = Environment(
            loader=PackageLoader("workflow_celery.ui", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def _render(self, request: UIRequest, template: str, status: int = 200, **context: Any) -> Page:
        context.setdefault("workflows", list(self.workflows))
        html = self.env.get_template(template).render(
            base=request.base, csrf_name=request.csrf_name, csrf_value=request.csrf_value,
            may_change=request.may_change, user=request.user, logout_url=request.logout_url, **context,
        )  # fmt: skip
        return Page(html, status)

    def _workflow(self, name: str | None) -> Workflow[Any, Any]:
        if name in self.workflows:
            return self.workflows[name]
        if name in (None, "") and self.workflows:
            return next(iter(self.workflows.values()))
        raise LookupError(f"no workflow named {name!r}")

    def not_found(self, request: UIRequest, what: str) -> Page:
        return self._render(request, "error.html", 404, title="Not found", message=what)

    def refused(self, request: UIRequest, what: str, status: int = 403, *, may_see: bool = True) -> Page:
        """An error page; for a user who ``may_see`` no runs, without the navigation (it names the workflows)."""
        return self._render(request, "error.html", status, title="Refused", message=what, nav=may_see)

    def unavailable(self, request: UIRequest) -> Page:
        """503: the database did not answer (one of ``DATABASE_ERRORS``; the error goes to the log, not the page)."""
        return self._render(request, "error.html", 503, title="Database unavailable", message=DATABASE_DOWN)

    # -- the runs list -----------------------------------------------------------

    def runs(self, request: UIRequest) -> Page:
        q = request.query
        try:
            wf = self._workflow(q.get("workflow"))
            filters = self._filters(wf, q)
        except (LookupError, ValueError) as exc:
            return self._render(request, "error.html", 400, title="Bad filter", message=str(exc))
        page = min(max(whole_number(q.get("page"), 1), 1), MAX_PAGE)
        records = wf.store.list_runs(wf.name, **filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        total = wf.store.count_runs(wf.name, **filters)
        kept = {k: v for k, v in q.items() if v and k != "page"}
        return self._render(
            request, "runs.html", wf=wf.name, rows=[self._row(wf, r) for r in records], total=total, page=page,
            pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1), query=kept,
            statuses=_statuses(wf),
            run_states=[s.name for s in RunState], live=q.get("live") == "1", live_seconds=LIVE_SECONDS,
            page_url=lambda n: f"{request.base}/runs?{urlencode({**kept, 'page': n})}",
        )  # fmt: skip

    def _filters(self, wf: Workflow[Any, Any], q: Mapping[str, str]) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if q.get("status"):
            try:
                filters["status"] = int(wf.definition.status_type[q["status"].upper()])
            except KeyError:
                raise ValueError(f"unknown status {q['status']!r} of workflow {wf.name}") from None
        if q.get("run_state"):
            try:
                filters["run_state"] = RunState[q["run_state"].upper()]
            except KeyError:
                raise ValueError(f"unknown run state {q['run_state']!r}") from None
        if q.get("foreign_id"):
            check_foreign_id(q["foreign_id"], workflow=wf.name)
            filters["foreign_id"] = q["foreign_id"]
        for key, name in (("created_after", "from"), ("created_before", "to")):
            if q.get(name):
                filters[key] = when(q[name], name)
        after, before = filters.get("created_after"), filters.get("created_before")
        if after and before and after >= before:
            raise ValueError("'from' must be earlier than 'to' (from is included, to is not)")
        return filters

    def _row(self, wf: Workflow[Any, Any], r: Record) -> dict[str, Any]:
        return {
            "run_id": r.run_id, "foreign_id": r.foreign_id, "status": wf.definition.status_name(r.status),
            "run_state": r.run_state.name, "version": r.meta.version, "reason": r.meta.run_state_reason,
            "created_at": at(r.created_at), "updated_at": at(r.updated_at),
        }  # fmt: skip

    # -- one run -------------------------------------------------------------------

    def _find(self, run_id: str) -> tuple[Workflow[Any, Any], Record] | None:
        if not run_id or len(run_id) > RUN_ID_LENGTH or "\x00" in run_id:
            return None
        for wf in self.workflows.values():
            try:
                record = wf.store.lookup(run_id)
            except RecordNotFound:
                continue
            if record.workflow_name in self.workflows:
                return self.workflows[record.workflow_name], record
        return None

    def _by_prefix(self, prefix: str) -> list[tuple[Workflow[Any, Any], Record]]:
        if len(prefix) < PREFIX_MIN or len(prefix) > RUN_ID_LENGTH or "\x00" in prefix:
            return []
        # Only this UI's workflows: a run of another one in the same database is not found here.
        found: list[tuple[Workflow[Any, Any], Record]] = []
        for wf in self.workflows.values():
            found += [(wf, r) for r in wf.store.list_runs(wf.name, run_id_prefix=prefix, limit=2)]
        return found

    def _one(self, request: UIRequest, run_id: str) -> tuple[Workflow[Any, Any], Record] | Page:
        """The run ``run_id`` names, whole or by its start (``PREFIX_MIN`` characters or more), else a 404 page."""
        found = self._find(run_id)
        if found is not None:
            return found
        matches = self._by_prefix(run_id)
        if len(matches) > 1:
            return self.not_found(request, f"{run_id!r} starts several run ids: give more of it")
        if matches:
            return matches[0]
        short = f": give at least {PREFIX_MIN} characters of its id" if len(run_id) < PREFIX_MIN else ""
        return self.not_found(request, f"run {run_id} not found{short}")

    def run(self, request: UIRequest, run_id: str) -> Response:
        found = self._one(request, run_id)
        if isinstance(found, Page):
            return found
        wf, record = found
        if record.run_id != run_id:
            return Redirect(f"{request.base}/runs/{record.run_id}")
        history = wf.store.history(run_id)
        shown = history[-HISTORY_SHOWN:]
        timeline = []
        for i, h in enumerate(shown):
            before = shown[i - 1].created_at if i else None
            timeline.append({
                "version": h.version, "status": wf.definition.status_name(h.status), "run_state": h.run_state.name,
                "reason": h.reason, "at": at(h.created_at),
                "after": "" if before is None else duration(h.created_at - before),
            })  # fmt: skip
        pending = [
            {
                "id": m.id, "queue": m.queue, "kind": str(getattr(m.kind, "value", m.kind)), "due_at": at(m.due_at),
                "published": m.attempts, "task_id": task_id(m.id, m.retries + 1),
            }
            for m in wf.store.outbox(run_id)
        ]  # fmt: skip
        errors = [
            {"status": wf.definition.status_name(e.status), "count": e.count, "type": e.last_error.error_type,
             "message": e.last_error.message, "traceback": e.last_error.traceback, "at": at(e.last_error.occurred_at)}
            for e in wf.store.errors(run_id)
        ]  # fmt: skip
        hook_errors = [
            {"hook": e.hook, "count": e.count, "type": e.last_error.error_type, "message": e.last_error.message,
             "at": at(e.last_error.occurred_at), "pending": any(p["id"] == e.message_id for p in pending)}
            for e in wf.store.hook_errors(run_id)
        ]  # fmt: skip
        try:
            obj = json.dumps(json.loads(record.object), indent=2, ensure_ascii=False)
        except ValueError:
            obj = record.object.decode("utf-8", "replace")
        return self._render(
            request, "run.html", wf=wf.name, run=self._row(wf, record), object=obj, timeline=timeline,
            hidden=len(history) - len(shown), pending=pending, errors=errors, hook_errors=hook_errors,
            trace_origin=record.meta.trace_origin, flower=self.flower_url, actions=_possible(record.run_state),
            done=request.query.get("done") if request.query.get("done") in ACTIONS else "",
        )  # fmt: skip

    def confirm(self, request: UIRequest, run_id: str, action: str) -> Response:
        """The form that asks before ``action``, if the run's state allows it; a run id's start is taken."""
        if action not in ACTIONS:
            return self.not_found(request, f"no action {action!r}")
        found = self._one(request, run_id)
        if isinstance(found, Page):
            return found
        wf, record = found
        if record.run_id != run_id:
            return Redirect(f"{request.base}/runs/{record.run_id}/{action}")
        possible = _possible(record.run_state)
        if action not in possible:
            state, allowed = record.run_state.name, ", ".join(possible) or "none"
            return self.refused(request, f"the run is {state}: {action} is not possible (possible: {allowed})", 409)
        return self._render(
            request, "confirm.html", wf=wf.name, run=self._row(wf, record), action=action, verb=ACTIONS[action]
        )

    def act(self, request: UIRequest, run_id: str, action: str) -> Response:
        """Pause, resume, cancel or delete the data of one run (the form's, or a script's with a run id's start)."""
        if not request.may_change:
            return self.refused(request, "you may look at runs but not change them")
        if action not in ACTIONS:
            return self.not_found(request, f"no action {action!r}")
        found = self._one(request, run_id)
        if isinstance(found, Page):
            return found
        wf, record = found
        reason = request.form.get("reason", "").strip() or f"from the web UI by {request.user or 'an operator'}"
        try:
            run_actions.apply(wf, action, record.run_id, reason)
        except InvalidRunStateTransition as exc:
            return self.refused(request, str(exc), 409)
        return Redirect(f"{request.base}/runs/{record.run_id}?{urlencode({'done': action})}")

    # -- bulk resume -----------------------------------------------------------------

    def bulk(self, request: UIRequest) -> Response:
        """Resume every paused run a filter matches: the count first (a dry run), then the change."""
        source = request.form if request.form else request.query
        try:
            wf = self._workflow(source.get("workflow"))
            filters = {**self._filters(wf, source), "run_state": RunState.PAUSED}
        except (LookupError, ValueError) as exc:
            return self._render(request, "error.html", 400, title="Bad filter", message=str(exc))
        kept = {k: v for k, v in source.items() if v and k in ("workflow", "status", "foreign_id", "from", "to")}
        if request.form.get("confirm") == "resume":
            if not request.may_change:
                return self.refused(request, "you may look at runs but not change them")
            # No more than the number the page showed (the oldest first): the count the operator agreed to.
            expected = bulk.expected_count(request.form.get("expected", ""))
            if expected is None:
                return self._render(
                    request, "error.html", 400, title="Bad request",
                    message="the form says no number of runs to resume: reload the page and try again",
                )  # fmt: skip
            done: dict[str, Any] = bulk.resume_all(wf, filters, expected)
            done["sig"] = bulk.sign(self._key(), wf.name, kept, done)
            # Post, redirect, get: reloading the result page does not resume again.
            return Redirect(f"{request.base}/bulk?{urlencode({**kept, 'workflow': wf.name, **done})}")
        matched = wf.store.count_runs(wf.name, **filters)
        result = {k: whole_number(request.query.get(k), 0) for k in bulk.COUNTS}
        shown = bulk.genuine(self._key(), wf.name, kept, result, str(request.query.get("sig", "")))
        return self._render(
            request, "bulk.html", wf=wf.name, matched=matched, query=kept, result=result if shown else None,
            limit=bulk.BULK_LIMIT, expected=min(matched, bulk.BULK_LIMIT), statuses=_statuses(wf),
        )  # fmt: skip

    def _key(self) -> bytes:
        given = self._secret() if self._secret is not None else None
        return (given.encode() if isinstance(given, str) else given) or self._own_secret

    # -- graphs ------------------------------------------------------------------------

    def graph(self, request: UIRequest, name: str) -> Page:
        try:
            wf = self._workflow(name)
        except LookupError as exc:
            return self.not_found(request, str(exc))
        counts: dict[int, dict[str, int]] = {}
        if isinstance(wf.store, WaitingRuns):
            for status, state, count in wf.store.runs_by_status(wf.name):
                counts.setdefault(status, {})[RunState(state).name] = count
        rows = [
            {
                "status": wf.definition.status_name(s),
                "counts": counts.get(s, {}),
                "total": sum(counts.get(s, {}).values()),
            }
            for s in wf.definition.graph.nodes
        ]
        return self._render(
            request, "graph.html", wf=wf.name, diagram=wf.visualise(), rows=rows, mermaid_js=self.mermaid_js,
            mermaid_integrity=DEFAULT_MERMAID_INTEGRITY if self.mermaid_js == DEFAULT_MERMAID_JS else "",
        )  # fmt: skip


def _possible(state: RunState) -> dict[str, str]:
    """The actions the run's state allows, with their verbs."""
    return {action: ACTIONS[action] for action in run_actions.allowed(state)}


def _statuses(wf: Workflow[Any, Any]) -> list[str]:
    return [wf.definition.status_name(s) for s in wf.definition.graph.nodes]
