"""The admin for runs: a list by workflow, status, run state and foreign id; a run's page; pause, resume, cancel.

Runs are read from the store's table (the unmanaged ``Run`` model) and
changed only through the workflow's own calls, so every rule of the run
states holds here as anywhere: a run that cannot be paused is reported, not
forced. Status names come from the workflows of ``WORKFLOW_CELERY["APP"]``.
Everything shown from a run (its object, reasons, errors) is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from django.contrib import admin, messages
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ...cli.common import CliError, find_workflows
from ...core.errors import WorkflowError
from ...core.run_state import RunState
from ...core.workflow import Workflow
from .models import Run
from .settings import app_module, database_alias

F = TypeVar("F", bound=Callable[..., Any])


def _display(description: str, ordering: str | None = None) -> Callable[[F], F]:
    # Django ships no type hints: its decorator, typed.
    return cast(Callable[[F], F], admin.display(description=description, ordering=ordering))


def workflows() -> dict[str, Workflow[Any, Any]]:
    """The project's workflows by name (none when ``WORKFLOW_CELERY["APP"]`` is unset or builds none)."""
    module = app_module()
    if module is None:
        return {}
    try:
        return _built_by(module)
    except CliError:
        return {}


@lru_cache(maxsize=8)
def _built_by(module: str) -> dict[str, Workflow[Any, Any]]:
    # Once per module, not once per row of a page: a module's workflows are built when it is imported.
    return find_workflows(module)


class StatusFilter(admin.SimpleListFilter):
    """By status name, across the workflows that have it (statuses are numbers in the table)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        chosen = request.GET.get("workflow_name__exact")
        names: dict[str, None] = {}
        for name, wf in sorted(workflows().items()):
            if chosen in (None, name):
                names.update({status.name: None for status in wf.definition.status_type if status.value != 0})
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        match = Q(pk__in=[])
        for name, wf in workflows().items():
            status = wf.definition.status_type.__members__.get(str(value))
            if status is not None:
                match |= Q(workflow_name=name, status=int(status))
        return queryset.filter(match)


HISTORY_SHOWN = 100
HISTORY_COUNT = "SELECT count(*) FROM workflow_history WHERE run_id = %s"
HISTORY_NEWEST = (
    "SELECT version, status, run_state, reason, created_at FROM workflow_history "
    "WHERE run_id = %s ORDER BY version DESC LIMIT %s"
)
MESSAGES_SHOWN = 10


def _state(value: int) -> str:
    try:
        return RunState(value).name
    except ValueError:
        return str(value)


def _status_name(run: Run, status: int | None = None) -> str:
    value = run.status if status is None else status
    wf = workflows().get(run.workflow_name)
    return str(value) if wf is None else wf.definition.status_name(value)


def _run_action(verb: str, done_verb: str, call: Callable[[Workflow[Any, Any], str, str], None]) -> Any:
    def action(model_admin: RunAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        found = workflows()
        done, failed = 0, []
        reason = f"{done_verb} in the admin by {request.user}"
        for run in queryset:
            wf = found.get(run.workflow_name)
            if wf is None:
                failed.append(
                    f"run {run.run_id}: workflow {run.workflow_name!r} is not built by WORKFLOW_CELERY['APP']"
                )
                continue
            try:
                call(wf, run.run_id, reason)
            except WorkflowError as exc:
                failed.append(f"run {run.run_id}: {exc}")
            else:
                done += 1
        if done:
            model_admin.message_user(
                request, f"{done_verb.capitalize()} {done} run{'s' if done != 1 else ''}", messages.SUCCESS
            )
        for failure in failed[:MESSAGES_SHOWN]:
            model_admin.message_user(request, failure, messages.WARNING)
        if len(failed) > MESSAGES_SHOWN:
            model_admin.message_user(
                request, f"and {len(failed) - MESSAGES_SHOWN} more runs left as they were", messages.WARNING
            )

    action.__name__ = f"{verb}_runs"
    return admin.action(description=f"{verb.capitalize()} the selected runs", permissions=["change_run_state"])(action)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("run_id", "workflow_name", "foreign_id", "status_name", "run_state", "updated_at")
    list_filter = ("workflow_name", StatusFilter, "run_state")
    # Exact matches: the table's indexes serve them, and ids are what operators paste.
    search_fields = ("=foreign_id", "=run_id")
    search_help_text = "An exact foreign id or run id"
    date_hierarchy = "created_at"
    list_per_page = 50
    fields = (
        "run_id", "workflow_name", "foreign_id", "status_name", "run_state", "run_state_reason",
        "created_at", "updated_at", "version", "trace_origin", "object_json", "history", "last_error",
    )  # fmt: skip
    readonly_fields = fields
    actions = [
        _run_action("pause", "paused", lambda wf, run_id, reason: wf.pause(run_id, reason)),
        _run_action("resume", "resumed", lambda wf, run_id, _reason: wf.resume(run_id)),
        _run_action("cancel", "cancelled", lambda wf, run_id, reason: wf.cancel(run_id, reason)),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return super().get_queryset(request).using(database_alias())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a run's page is read-only: runs change through the actions

    def has_change_run_state_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("workflow_celery.change_run"))

    @_display("status", ordering="status")
    def status_name(self, run: Run) -> str:
        return _status_name(run)

    @_display("object")
    def object_json(self, run: Run) -> SafeString:
        try:
            shown = json.dumps(json.loads(run.object), indent=2, sort_keys=True)
        except ValueError:
            shown = run.object
        return format_html("<pre>{}</pre>", shown)

    @_display("history")
    def history(self, run: Run) -> SafeString:
        # Without the objects, and only the newest versions: a run that repeats a step for months has
        # hundreds of thousands, each with its object.
        with connections[database_alias()].cursor() as cursor:
            cursor.execute(HISTORY_COUNT, [run.run_id])
            total = cursor.fetchone()[0]
            cursor.execute(HISTORY_NEWEST, [run.run_id, HISTORY_SHOWN])
            newest = cursor.fetchall()[::-1]
        rows: list[tuple[Any, ...]] = []
        previous: datetime | None = None
        for version, status, run_state, reason, created_at in newest:
            since = "" if previous is None else f"+{(created_at - previous).total_seconds():.3f} s"
            previous = created_at
            rows.append((version, created_at.isoformat(), since, _status_name(run, status), _state(run_state), reason))
        shown = "" if total <= len(rows) else f"The newest {len(rows)} of {total} versions."
        return format_html(
            "{}<p>{}</p>", _table(("version", "at", "after", "status", "run state", "reason"), rows), shown
        )

    @_display("last error")
    def last_error(self, run: Run) -> SafeString:
        wf = workflows().get(run.workflow_name)
        errors = [] if wf is None else wf.errors(run.run_id)
        if not errors:
            return format_html("<p>{}</p>", "none")
        last = max(errors, key=lambda e: e.last_error.occurred_at)
        error = last.last_error
        return format_html(
            "<p>{} failed attempt(s) at {}; the last at {}:</p><p><b>{}</b>: {}</p><pre>{}</pre>",
            last.count, _status_name(run, last.status), error.occurred_at.isoformat(),
            error.error_type, error.message, error.traceback,
        )  # fmt: skip


def _table(headers: Iterable[str], rows: Iterable[tuple[Any, ...]]) -> SafeString:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
