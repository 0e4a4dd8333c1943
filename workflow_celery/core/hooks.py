"""Lifecycle hooks: ``on_complete``, ``on_cancel``, ``on_pause`` (and data deletion).

A run-state change writes one doorbell per registered hook in the same
transaction as the change, on ``{workflow}.hooks.{event}``. Each hook runs in
isolation, at least once, with the record as it was at that change; a hook
that raises is retried with exponential backoff until it succeeds, and never
changes the run.

A hook is known by its name, unique among the hooks of its event: the
function's qualified name, or the ``name=`` it was registered with. The name
is in the doorbell's message and id, so adding, removing or reordering hooks
never changes which hook a pending doorbell rings. A worker that receives a
doorbell for a hook it does not know (a newer or older deployment's) leaves it
to one that does: the row rings again later, and only an operator discards it
(``workflow-celery hooks discard``).
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .answer import Answer, HookOutcome
from .definition import Definition, HookSpec
from .doorbell import attempt_of, hook_doorbell_id, legacy_hook_label
from .errors import AttemptAbandoned, ConfigurationError, WorkflowError
from .failures import backoff, capture_error, plan_retry
from .options import WorkflowOptions
from .ports import Claim, Claims, Clock, ErrorLog, Metrics, Outbox, RunStore
from .run import call_user
from .typed import Typed

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

MAX_HOOK_NAME_LENGTH = 100
"""Characters a hook name may have: it is part of its doorbells' ids, which the database keeps in 200."""


def default_hook_name(fn: Callable[..., Any]) -> str:
    """A hook's name when none is given: its qualified name (its class's, for a callable object)."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) and name else type(fn).__qualname__


def hook_name(fn: Callable[..., Any], name: str | None, *, event: str, workflow: str) -> str:
    """The name ``fn`` is registered under for ``event``; raises ``ConfigurationError`` for one that cannot be.

    A name is a non-empty, printable string of at most ``MAX_HOOK_NAME_LENGTH``
    characters without ``:`` (labels of the older ``{index}:{qualname}`` form
    are told apart by it).
    """
    given = name is not None
    chosen = name if given else default_hook_name(fn)
    what = f"{event} hook name {chosen!r}" + ("" if given else f" (the qualified name of {fn!r})")
    hint = "" if given else "; register it with name=..."
    if not isinstance(chosen, str) or not chosen.strip():
        raise ConfigurationError(f"{event} hook name must be a non-empty string, got {chosen!r}", workflow=workflow)
    if len(chosen) > MAX_HOOK_NAME_LENGTH:
        raise ConfigurationError(
            f"{what} is {len(chosen)} characters long; at most {MAX_HOOK_NAME_LENGTH} are allowed{hint}",
            workflow=workflow,
        )
    if ":" in chosen or not chosen.isprintable():
        raise ConfigurationError(f"{what} may not contain ':' or unprintable characters{hint}", workflow=workflow)
    return chosen


def find_hook(definition: Definition[Any, Any], event: str, hook: str) -> HookSpec | None:
    """The registered hook a doorbell names, or None if this definition does not know it.

    ``hook`` is a name, or a label of the older ``{index}:{qualname}`` form,
    which names the hook whose function has that qualified name (the one at
    ``index`` if several have it).
    """
    specs = definition.hooks.get(event, [])
    for spec in specs:
        if spec.name == hook:
            return spec
    legacy = legacy_hook_label(hook)
    if legacy is None:
        return None
    index, qualname = legacy
    matches = [s for s in specs if default_hook_name(s.fn) == qualname]
    if len(matches) == 1:
        return matches[0]
    if index < len(specs) and specs[index] in matches:
        return specs[index]
    return None


class HookStore(RunStore, Outbox, Claims, ErrorLog, Protocol):
    """The roles of the store hooks are answered with."""


class HookRunner(Generic[T, S]):
    """Answers the doorbells of one workflow's hook queues: runs one hook of one run-state change."""

    def __init__(
        self,
        definition: Definition[T, S],
        store: HookStore,
        clock: Clock,
        options: WorkflowOptions,
        typed: Typed[T, S],
        metrics: Metrics,
    ) -> None:
        self.definition = definition
        self.store = store
        self.clock = clock
        self.options = options
        self.typed = typed
        self.metrics = metrics
        self._left: set[tuple[str, str]] = set()
        """``(event, hook)`` of the unknown hooks this process has said it leaves to others: said once each."""

    def handle(self, event: str, body: Any) -> Answer:
        name = self.definition.name
        queue = self.definition.hook_queue_for(event)
        try:
            run_id, version, hook = self._parse(event, body)
        except WorkflowError as exc:
            log.error("dropping message on %s: %s", queue, exc, extra={"workflow": name})
            return Answer(HookOutcome.DROPPED_INVALID)
        message_id = hook_doorbell_id(run_id, version, event, hook)
        attempt_said = body.get("attempt")
        now = self.clock.now()
        token = uuid.uuid4().hex
        claim = self.store.claim(
            message_id, run_id, None, token, now, now + self.options.redeliver_after, attempt=attempt_said
        )
        if claim.doorbell is None:
            # Already succeeded (a duplicate delivery), or the run is unknown.
            log.debug("hook %s for run %s v%d already ran", hook, run_id, version)
            return Answer(HookOutcome.DROPPED_DONE, message_id)
        if not claim.claimed and attempt_said is not None and attempt_said != claim.doorbell.retries + 1:
            log.info("dropping a copy of attempt %d at %s, which already failed", attempt_said, message_id)
            return Answer(HookOutcome.DROPPED_DONE, message_id)
        if not claim.claimed:
            log.info("dropping a copy of %s: another worker is running it", message_id, extra={"workflow": name})
            return Answer(HookOutcome.DROPPED_RUNNING, message_id)
        if claim.record is None:
            # The run itself is gone (removed by hand): nothing can ever run this hook.
            log.error("dropping %s for run %s v%d: no such run", queue, run_id, version, extra={"workflow": name})
            self.store.delete_outbox([message_id])
            return Answer(HookOutcome.DROPPED_INVALID, message_id)
        spec = find_hook(self.definition, event, hook)
        if spec is None:
            return self._leave(event, hook, message_id, run_id, version, token, claim)
        attempt = claim.failures + 1
        started = time.perf_counter()
        try:
            if claim.abandoned:
                raise AttemptAbandoned(workflow=name, run_id=run_id, hook=spec.name)
            entry = next((h for h in self.store.history(run_id) if h.version == version), None)
            if entry is None:
                self.store.delete_outbox([message_id])
                return Answer(HookOutcome.DROPPED_INVALID, message_id)
            call_user(spec.fn, self.typed.record(claim.record, entry))
        except Exception as exc:
            self.metrics.hook_finished(name, spec.name, time.perf_counter() - started, False)
            return self._failed(message_id, run_id, spec.name, token, attempt, exc)
        self.metrics.hook_finished(name, spec.name, time.perf_counter() - started, True)
        self.store.delete_outbox([message_id])
        return Answer(HookOutcome.SUCCEEDED, message_id, attempt)

    def _leave(
        self, event: str, hook: str, message_id: str, run_id: str, version: int, token: str, claim: Claim
    ) -> Answer:
        """Give back a doorbell for a hook this process does not know, to ring again for a worker that does.

        The delay grows with each time the relay has published the doorbell,
        as a failing hook's does (``hook_err_backoff`` doubling up to
        ``hook_max_backoff``), so a hook no worker knows any more costs one
        message every few minutes until an operator discards it.
        """
        name = self.definition.name
        now = self.clock.now()
        attempts = claim.doorbell.attempts if claim.doorbell is not None else 0
        delay = backoff(self.options.hook_err_backoff, self.options.hook_max_backoff, attempts + 1)
        if claim.abandoned:
            # The attempt before this one died in a worker that knew the hook: count it, as that worker would have.
            lost = capture_error(AttemptAbandoned(workflow=name, run_id=run_id, hook=hook), now)
            self.store.record_hook_failure(
                message_id, token, hook, lost, due_at=now + delay, retries=claim.failures + 1
            )
        else:
            self.store.release_claim(message_id, token, due_at=now + delay)
        first = (event, hook) not in self._left
        self._left.add((event, hook))
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "leaving %s hook %r of workflow %s (run %s v%d) to a worker that knows it: this one knows %s; it rings "
            "again in %.1fs. If no worker will ever know it, discard its doorbells with "
            "`workflow-celery -A APP hooks discard --workflow %s --event %s --hook '%s'`",
            event,
            hook,
            name,
            run_id,
            version,
            ", ".join(repr(s.name) for s in self.definition.hooks.get(event, [])) or "none",
            delay.total_seconds(),
            name,
            event,
            hook,
            extra={"workflow": name, "run_id": run_id, "hook": hook},
        )
        return Answer(HookOutcome.LEFT_UNKNOWN, message_id)

    def _parse(self, event: str, body: Any) -> tuple[str, int, str]:
        name = self.definition.name
        if not isinstance(body, dict) or body.get("workflow") != name:
            raise WorkflowError("malformed or foreign hook message", workflow=name)
        run_id, version, hook = body.get("run_id"), body.get("version"), body.get("hook")
        if not isinstance(run_id, str) or type(version) is not int or not isinstance(hook, str) or not hook:
            raise WorkflowError("malformed hook message: run_id, version and hook are required", workflow=name)
        if body.get("event") != event:
            raise WorkflowError(f"hook message for {body.get('event')!r} on the {event} queue", workflow=name)
        attempt_of(body, workflow=name)
        return run_id, version, hook

    def _failed(self, message_id: str, run_id: str, hook: str, token: str, attempt: int, exc: Exception) -> Answer:
        now = self.clock.now()
        info = capture_error(exc, now)
        plan = plan_retry(
            now,
            backoff(self.options.hook_err_backoff, self.options.hook_max_backoff, attempt),
            max_countdown=self.options.max_retry_countdown,
            grace=self.options.redeliver_after,
        )
        count = self.store.record_hook_failure(message_id, token, hook, info, due_at=plan.backstop_at, retries=attempt)
        if count is None:
            return Answer(HookOutcome.DROPPED_DONE, message_id, attempt, exc)
        log.warning(
            "hook %s of workflow %s failed for run %s (attempt %d), retrying in %.1fs: %s: %s",
            hook,
            self.definition.name,
            run_id,
            attempt,
            (plan.retry_at - now).total_seconds(),
            info.error_type,
            info.message,
            extra={"workflow": self.definition.name, "run_id": run_id, "hook": hook},
        )
        return Answer(HookOutcome.RETRY_SCHEDULED, message_id, attempt, exc, plan)
