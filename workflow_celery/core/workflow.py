"""``Workflow``: what ``Builder.build`` returns and what applications call."""

from __future__ import annotations

import asyncio
import builtins
import enum
import inspect
import json
import logging
import sys
import time
import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from .answer import Answer, Outcome
from .definition import Definition
from .engine import Engine
from .errors import (
    AwaitTimeout,
    ConfigurationError,
    RecordNotFound,
    SerializationError,
    WorkflowError,
)
from .options import WorkflowOptions
from .ports import Clock, Dispatcher, HookErrors, RecordStore, StepErrors
from .record import HistoryEntry, Meta, Record, TypedRecord
from .run import Run
from .run_state import RunState
from .visualise import mermaid

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

AWAIT_MIN_POLL = 0.01
AWAIT_MAX_POLL = 0.25
CAS_ATTEMPTS = 5


class RunFinished(WorkflowError):
    """the run finished without reaching the awaited status"""


class Workflow(Generic[T, S]):
    """A built workflow bound to a store and a dispatcher.

    Safe to share between threads; cheap to call from web views.
    """

    def __init__(
        self,
        definition: Definition[T, S],
        store: RecordStore,
        dispatcher: Dispatcher,
        clock: Clock,
        options: WorkflowOptions,
    ) -> None:
        self.definition = definition
        self.store = store
        self.clock = clock
        self.options = options
        self.engine: Engine[T, S] = Engine(definition, store, dispatcher, clock, options)
        self.engine.check_deletable()
        starting = definition.graph.starting_nodes()
        self.default_start: S = definition.status(starting[0])

    @property
    def name(self) -> str:
        return self.definition.name

    def queues(self) -> builtins.list[str]:
        """Every queue this workflow's workers consume (steps and hooks)."""
        return self.definition.queues()

    # -- starting runs -----------------------------------------------------

    def trigger(self, foreign_id: str, *, initial_value: T | None = None, start_at: S | None = None) -> str:
        """Start a run for ``foreign_id``; return its run id.

        Raises ``WorkflowInProgress`` if a run for ``foreign_id`` is initiated,
        running or paused (checked atomically by the store), and
        ``ConfigurationError`` if ``start_at`` is not a status of the graph.
        """
        check_foreign_id(foreign_id, workflow=self.name)
        start = self.default_start if start_at is None else start_at
        if not isinstance(start, int) or int(start) not in self.definition.graph:
            raise ConfigurationError(
                f"start_at {start!r} is not a status of the workflow's graph "
                f"(statuses: {', '.join(self.definition.status_name(n) for n in self.definition.graph.nodes)})",
                workflow=self.name,
                foreign_id=foreign_id,
            )
        obj = self.engine.codec.default() if initial_value is None else initial_value
        run_id = str(uuid.uuid4())
        encoded = self.engine.codec.encode(obj, run_id=run_id, foreign_id=foreign_id)
        now = self.clock.now()
        terminal = self.definition.graph.is_terminal(int(start))
        record = Record(
            workflow_name=self.name,
            foreign_id=foreign_id,
            run_id=run_id,
            run_state=RunState.COMPLETED if terminal else RunState.INITIATED,
            status=int(start),
            object=encoded,
            created_at=now,
            updated_at=now,
            meta=Meta(version=1, status_description=self.definition.status_name(int(start)), trace_origin=_caller()),
        )
        bells = self.engine.doorbells_for(record, now)
        self.store.insert_run(record, bells.all)
        self.engine.publish(bells.now)
        return run_id

    # -- reading runs ------------------------------------------------------

    def typed(self, record: Record) -> TypedRecord[T, S]:
        return TypedRecord(**self.engine.fields(record))

    def _own(self, record: Record) -> Record:
        if record.workflow_name != self.name:
            raise RecordNotFound(workflow=self.name, run_id=record.run_id)
        return record

    def lookup(self, run_id: str) -> TypedRecord[T, S]:
        """The run with this id. Raises ``RecordNotFound``."""
        return self.typed(self._own(self.store.lookup(run_id)))

    def latest(self, foreign_id: str) -> TypedRecord[T, S]:
        """The newest run for ``foreign_id``. Raises ``RecordNotFound``."""
        return self.typed(self.store.latest(self.name, foreign_id))

    def list(
        self,
        *,
        status: S | None = None,
        run_state: RunState | None = None,
        foreign_id: str | None = None,
        limit: int = 25,
        offset: int = 0,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[TypedRecord[T, S]]:
        """Runs of this workflow, newest first by default."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        records = self.store.list_runs(
            self.name,
            status=None if status is None else int(status),
            run_state=run_state,
            foreign_id=foreign_id,
            limit=limit,
            offset=offset,
            order=order,
        )
        return [self.typed(r) for r in records]

    def history(self, run_id: str) -> builtins.list[HistoryEntry]:
        """Every stored version of a run, oldest first."""
        self._own(self.store.lookup(run_id))
        return self.store.history(run_id)

    def errors(self, run_id: str) -> builtins.list[StepErrors]:
        """The run's error counters (one per status that is failing)."""
        return self.store.errors(run_id)

    def await_status(self, foreign_id: str, run_id: str, status: S, *, timeout: float | None = None) -> Run[T, S]:
        """Wait until the run is at, or has passed through, ``status``.

        Returns the run as it was when it reached ``status``. Raises
        ``AwaitTimeout`` after ``timeout`` seconds, ``RecordNotFound`` for an
        unknown run and ``RunFinished`` if the run ended without reaching it.
        """
        if int(status) not in self.definition.graph:
            raise ConfigurationError(f"status {status!r} is not part of the graph", workflow=self.name, run_id=run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = AWAIT_MIN_POLL
        while True:
            record = self._own(self.store.lookup(run_id))
            if record.foreign_id != foreign_id:
                raise RecordNotFound(
                    f"run belongs to foreign id {record.foreign_id!r}",
                    workflow=self.name,
                    run_id=run_id,
                    foreign_id=foreign_id,
                )
            for entry in self.store.history(run_id):
                if entry.status == int(status):
                    return self._run_from_history(record, entry)
            if record.run_state.finished:
                raise RunFinished(
                    f"the run finished ({record.run_state.name}) at "
                    f"{self.definition.status_name(record.status)} without reaching {status.name}",
                    workflow=self.name,
                    foreign_id=foreign_id,
                    run_id=run_id,
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise AwaitTimeout(
                    f"run did not reach {status.name} within {timeout}s "
                    f"(it is at {self.definition.status_name(record.status)}, {record.run_state.name})",
                    workflow=self.name,
                    foreign_id=foreign_id,
                    run_id=run_id,
                )
            sleep = poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0.0))
            time.sleep(sleep)
            poll = min(poll * 1.5, AWAIT_MAX_POLL)

    def _run_from_history(self, record: Record, entry: HistoryEntry) -> Run[T, S]:
        return Run(**self.engine.fields(record, entry))

    # -- callbacks ---------------------------------------------------------

    def callback(self, foreign_id: str, status: S, payload: bytes | str | Any) -> None:
        """Hand ``payload`` to the callbacks waiting at ``status`` for the latest run of ``foreign_id``.

        Ignored (returns quietly) when that run is not at ``status`` or is
        paused, cancelled, finished or deleted. Runs in the caller's process;
        a callback's exception is raised here (the caller retries), and a
        returned status that is not allowed raises ``InvalidTransition``.
        Either is a failed attempt at the status, counted like a step's: the
        ``pause_after_err_count``-th pauses the run. ``payload`` may be bytes,
        a str (UTF-8) or any JSON-serialisable value.
        """
        specs = self.definition.callbacks.get(int(status), [])
        if not specs:
            raise ConfigurationError(f"no callback is registered for {status!r}", workflow=self.name)
        data = _payload_bytes(payload)
        for spec in specs:
            record = self.store.latest(self.name, foreign_id)
            if record.status != int(status) or record.run_state not in (RunState.INITIATED, RunState.RUNNING):
                return
            try:
                run = self.engine.to_run(record)
                result = spec.fn(run, data)
                if spec.is_async or inspect.iscoroutine(result):
                    result = asyncio.run(result)
                outcome = self.engine.apply_result(spec.status, spec.destinations, record, run, result, "callback")
            except Exception as exc:
                # A failed attempt like any other: counted at the status, pausing the run at the limit.
                self.engine.callback_failed(record, exc)
                raise
            if outcome is not Outcome.SKIPPED:
                return

    # -- run control -------------------------------------------------------

    def pause(self, run_id: str, reason: str = "") -> None:
        """Pause a run; its step will not run until ``resume``."""
        self._change_run_state(run_id, RunState.PAUSED, reason)

    def resume(self, run_id: str) -> None:
        """Resume a paused run: its current step is enqueued again."""
        self._change_run_state(run_id, RunState.RUNNING, "")

    def cancel(self, run_id: str, reason: str = "") -> None:
        """Cancel a run for good (a database state, never a Celery revoke)."""
        self._change_run_state(run_id, RunState.CANCELLED, reason)

    def delete_data(self, run_id: str, reason: str = "") -> None:
        """Erase a finished run's object (right to be forgotten), history copies included.

        Allowed on completed and cancelled runs (and again on deleted ones). The
        run moves to ``REQUESTED_DATA_DELETED`` now and to ``DATA_DELETED`` once a
        worker consuming ``{workflow}.data-deletion`` has scrubbed it.
        """
        self._change_run_state(run_id, RunState.REQUESTED_DATA_DELETED, reason)

    def _change_run_state(self, run_id: str, target: RunState, reason: str) -> None:
        for _ in range(CAS_ATTEMPTS):
            record = self._own(self.store.lookup(run_id))
            if self.engine.change_run_state(record, target, reason, self.clock.now()):
                return
        raise WorkflowError(
            f"run kept changing; could not move it to {target.name} after {CAS_ATTEMPTS} attempts",
            workflow=self.name,
            run_id=run_id,
        )

    # -- workers -----------------------------------------------------------

    def handle_step(self, status: int, body: Any) -> Answer:
        """What a worker does with one message from a step queue."""
        return self.engine.handle_step(status, body)

    def handle_hook(self, event: str, body: Any) -> Answer:
        """What a worker does with one message from a hook queue."""
        return self.engine.handle_hook(event, body)

    def hook_errors(self, run_id: str) -> builtins.list[HookErrors]:
        """Failure counters of the run's hooks (kept after a later success)."""
        return self.store.hook_errors(run_id)

    def handle_delete(self, body: Any) -> Answer:
        """What a worker does with one message from the data-deletion queue."""
        return self.engine.handle_delete(body)

    def reconcile_once(self, now: datetime | None = None, *, limit: int = 500) -> int:
        """Ring again runs that nothing would move: in progress, idle for ``redeliver_after``, no doorbell.

        The outbox normally makes this impossible; this is the safety net for rows
        removed by hand or lost with a restored backup. Safe to run in every worker.
        """
        now = now or self.clock.now()
        stranded = self.store.stranded_runs(
            self.name, list(self.definition.steps), now - self.options.redeliver_after, limit
        )
        bells = [b for r in stranded for b in self.engine.doorbells_for(r, now).now]
        if bells:
            self.store.insert_outbox(bells)
            self.engine.publish(bells)
            log.warning("re-enqueued %d stranded run(s) of workflow %s", len(stranded), self.name)
        return len(stranded)

    def relay_once(self, now: datetime | None = None, *, limit: int = 500) -> int:
        """Publish doorbells that are due (lost, never published, or retries); return how many."""
        due = self.store.claim_due_outbox(
            now or self.clock.now(),
            limit=limit,
            redeliver_after=self.options.redeliver_after,
            max_interval=self.options.max_redeliver_interval,
        )
        # Doorbells of other workflows sharing the store are published too: a message
        # names its own queue, so any process connected to the broker can ring it.
        self.engine.publish(due)
        return len(due)

    def visualise(self) -> str:
        """The status graph as mermaid ``stateDiagram-v2`` text."""
        return mermaid(self.definition)

    def __repr__(self) -> str:
        return f"<Workflow {self.name} statuses={len(self.definition.graph.nodes)} steps={len(self.definition.steps)}>"


MAX_FOREIGN_ID_LENGTH = 512
"""Characters a foreign id may have: it is indexed, and an index entry has a size limit."""


def check_foreign_id(foreign_id: object, *, workflow: str) -> None:
    """Refuse a foreign id no store can keep and find again: raises ``ValueError`` saying why.

    It must be a non-empty ``str`` of at most ``MAX_FOREIGN_ID_LENGTH``
    characters, without NUL characters or lone surrogates (PostgreSQL text
    and UTF-8 have no room for them). It is an identifier, so it is refused
    rather than altered.
    """
    if not isinstance(foreign_id, str) or not foreign_id:
        raise ValueError(f"foreign_id must be a non-empty string, got {foreign_id!r} (workflow={workflow})")
    if len(foreign_id) > MAX_FOREIGN_ID_LENGTH:
        raise ValueError(
            f"foreign_id is {len(foreign_id)} characters long; at most {MAX_FOREIGN_ID_LENGTH} are allowed "
            f"(workflow={workflow})"
        )
    if "\x00" in foreign_id:
        raise ValueError(f"foreign_id {foreign_id!r} contains a NUL character (workflow={workflow})")
    if not foreign_id.isascii():
        try:
            foreign_id.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"foreign_id {foreign_id!r} is not valid Unicode (it contains a lone surrogate) (workflow={workflow})"
            ) from None


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    try:
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"callback payload is not bytes, str or JSON-serialisable: {exc}") from exc


def _caller() -> str:
    # Frame 0 is _caller, 1 is trigger, 2 is whoever called trigger.
    frame: Any = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
