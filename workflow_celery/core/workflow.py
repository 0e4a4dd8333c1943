"""``Workflow``: what ``Builder.build`` returns and what applications call."""

from __future__ import annotations

import builtins
import enum
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from . import relay
from .answer import Answer, Outcome
from .async_calls import AsyncCalls
from .awaiting import AwaitCalls
from .codec import ObjectCodec
from .connectors import event_run_id
from .definition import Definition
from .doorbell import ACTIVE, Planner
from .engine import Engine
from .errors import (
    ConfigurationError,
    RecordNotFound,
    SerializationError,
    WorkflowError,
    WorkflowInProgress,
)
from .failures import Failures
from .hooks import HookRunner
from .options import WorkflowOptions
from .ports import Clock, Dispatcher, HookErrors, Metrics, RecordStore, StepErrors, complete_metrics
from .record import HistoryEntry, Meta, Record, TypedRecord
from .run import call_user
from .run_state import RunState
from .schedule_calls import ScheduleCalls
from .scheduler import Scheduler
from .text import check_foreign_id
from .transition import Transitions
from .typed import Typed
from .visualise import mermaid

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5


Handler = Callable[[Any], Answer]
"""What a worker does with the keyword arguments of one message from a queue."""


class Workflow(AwaitCalls[T, S], AsyncCalls[T, S], ScheduleCalls[T]):
    """A built workflow bound to a store and a dispatcher.

    Safe to share between threads; cheap to call from web views. It puts
    together the parts each concept lives in: ``codec`` and ``typed`` (the
    object and the typed views of a record), ``planner`` (what a write rings),
    ``transitions`` (writing the next version), ``failures`` (counting,
    retrying, pausing), ``engine`` (answering doorbells), ``hooks`` and
    ``scheduler``. Async callers use the ``a…`` calls of ``AsyncCalls``;
    schedules are ``ScheduleCalls``.
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
        self.dispatcher = dispatcher
        self.clock = clock
        self.options = options
        self.codec: ObjectCodec[T] = ObjectCodec(definition.name, definition.object_type)
        self.typed: Typed[T, S] = Typed(definition, self.codec)
        self.planner = Planner(definition, options)
        self.metrics = metrics = complete_metrics(options.metrics)
        self.transitions: Transitions[T, S] = Transitions(
            definition, store, dispatcher, clock, self.codec, self.planner, metrics
        )
        self.failures: Failures[T, S] = Failures(definition, store, store, self.transitions, clock, options)
        self.engine: Engine[T, S] = Engine(
            definition, store, clock, options, self.codec, self.typed, self.planner, self.transitions, self.failures
        )
        self.hooks: HookRunner[T, S] = HookRunner(definition, store, clock, options, self.typed, metrics)
        self.scheduler: Scheduler[T] = Scheduler(
            definition.name, store, self._exists, clock, self.codec, self._scheduled_trigger, options.err_backoff
        )
        self.engine.check_deletable()
        starting = definition.graph.starting_nodes()
        self.default_start: S = definition.status(starting[0])

    @property
    def name(self) -> str:
        return self.definition.name

    def queues(self) -> builtins.list[str]:
        """Every queue this workflow's workers consume (steps and hooks)."""
        return self.definition.queues()

    def routes(self) -> dict[str, Handler]:
        """Every queue of the workflow and what a worker does with one message from it.

        What a transport registers: a Celery task per queue, or the
        in-process broker's table. A handler never raises for a bad message.
        """
        routes: dict[str, Handler] = {}
        for status, queue in self.definition.step_queues().items():
            routes[queue] = _step_route(self.engine, status, self.metrics, queue)
        routes[self.definition.delete_queue()] = self.engine.handle_delete
        for event, specs in self.definition.hooks.items():
            if specs:
                routes[self.definition.hook_queue_for(event)] = _hook_route(self.hooks, event)
        return routes

    # -- starting runs -----------------------------------------------------

    def trigger(self, foreign_id: str, *, initial_value: T | None = None, start_at: S | None = None) -> str:
        """Start a run for ``foreign_id``; return its run id.

        Raises ``WorkflowInProgress`` if a run for ``foreign_id`` is initiated,
        running or paused (checked atomically by the store), and
        ``ConfigurationError`` if ``start_at`` is not a status of the graph.
        """
        return self._trigger(foreign_id, initial_value, start_at, _caller())

    def _scheduled_trigger(self, foreign_id: str, initial_value: T | None, run_id: str) -> str:
        return self._trigger(foreign_id, initial_value, None, f"schedule of {foreign_id}", run_id)

    def _trigger(
        self, foreign_id: str, initial_value: T | None, start_at: S | None, origin: str, run_id: str | None = None
    ) -> str:
        check_foreign_id(foreign_id, workflow=self.name)
        start = self.default_start if start_at is None else start_at
        if not isinstance(start, int) or int(start) not in self.definition.graph:
            raise ConfigurationError(
                f"start_at {start!r} is not a status of the workflow's graph "
                f"(statuses: {', '.join(self.definition.status_name(n) for n in self.definition.graph.nodes)})",
                workflow=self.name,
                foreign_id=foreign_id,
            )
        obj = self.codec.default() if initial_value is None else initial_value
        from_event = None if run_id else event_run_id(self.name, foreign_id)
        run_id = run_id or from_event or str(uuid.uuid4())
        encoded = self.codec.encode(obj, run_id=run_id, foreign_id=foreign_id)
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
            meta=Meta(version=1, status_description=self.definition.status_name(int(start)), trace_origin=origin),
        )
        bells = self.planner.plan(record, now)
        try:
            self.store.insert_run(record, bells.all)
        except (WorkflowInProgress, ValueError):
            if from_event is None or not self._exists(run_id):
                raise
            return run_id  # the event was handled before: its run exists already
        self.transitions.publish(bells.now)
        return run_id

    def _exists(self, run_id: str) -> bool:
        try:
            self.store.lookup(run_id)
        except RecordNotFound:
            return False
        return True

    # -- reading runs ------------------------------------------------------

    def _own(self, record: Record) -> Record:
        if record.workflow_name != self.name:
            raise RecordNotFound(workflow=self.name, run_id=record.run_id)
        return record

    def lookup(self, run_id: str) -> TypedRecord[T, S]:
        """The run with this id. Raises ``RecordNotFound``."""
        return self.typed.record(self._own(self.store.lookup(run_id)))

    def latest(self, foreign_id: str) -> TypedRecord[T, S]:
        """The newest run for ``foreign_id``. Raises ``RecordNotFound``."""
        return self.typed.record(self.store.latest(self.name, foreign_id))

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
        return [self.typed.record(r) for r in records]

    def history(self, run_id: str) -> builtins.list[HistoryEntry]:
        """Every stored version of a run, oldest first."""
        self._own(self.store.lookup(run_id))
        return self.store.history(run_id)

    def errors(self, run_id: str) -> builtins.list[StepErrors]:
        """The run's error counters (one per status that is failing)."""
        return self.store.errors(run_id)

    # -- callbacks ---------------------------------------------------------

    def callback(self, foreign_id: str, status: S, payload: bytes | str | Any) -> None:
        """Hand ``payload`` to the callbacks waiting at ``status`` for the latest run of ``foreign_id``.

        Ignored (returns quietly) when that run is not at ``status`` or is
        paused, cancelled, finished or deleted: a duplicate or late callback
        changes nothing. Runs in the caller's process, and the run's new
        version is committed before it returns; an INFO line of this module's
        logger says whether it was applied or ignored, and why.
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
            if record.status != int(status) or record.run_state not in ACTIVE:
                at = record.status == int(status)
                where = record.run_state.name if at else f"at {self.definition.status_name(record.status)}"
                self._callback_said(record, status, f"ignored: the run is {where}")
                return
            try:
                run = self.typed.run(record)
                result = call_user(spec.fn, run, data)
                outcome = self.transitions.apply(
                    spec.status, spec.destinations, record, run, result, "callback", keep_running=True
                )
            except Exception as exc:
                # A failed attempt like any other: counted at the status, pausing the run at the limit,
                # and committed on its own: the exception usually rolls back the caller's transaction.
                try:
                    with self.store.on_its_own():
                        self.failures.callback_failed(record, exc)
                except Exception:
                    log.warning(
                        "could not count the failed callback of run %s of workflow %s",
                        record.run_id, self.name, exc_info=True,
                        extra={"workflow": self.name, "run_id": record.run_id},
                    )  # fmt: skip
                raise
            if outcome is not Outcome.SKIPPED:
                self._callback_said(record, status, f"applied ({outcome.value})")
                return
        self._callback_said(record, status, "applied: every callback skipped, the run stays where it is")

    def _callback_said(self, record: Record, status: S, what: str) -> None:
        log.info(
            "callback at %s for run %s of workflow %s %s",
            status.name, record.run_id, self.name, what,
            extra={"workflow": self.name, "run_id": record.run_id, "foreign_id": record.foreign_id},
        )  # fmt: skip

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
            if self.transitions.change_run_state(record, target, reason, self.clock.now(), keep_running=True):
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
        return self.hooks.handle(event, body)

    def hook_errors(self, run_id: str) -> builtins.list[HookErrors]:
        """Failure counters of the run's hooks (kept after a later success)."""
        return self.store.hook_errors(run_id)

    def abandon_attempt(self, message_id: str, run_id: str, *, hook: bool = False) -> None:
        """The process running an attempt at doorbell ``message_id`` died (see ``Engine.abandon``)."""
        self.engine.abandon(message_id, run_id, hook=hook)

    def handle_delete(self, body: Any) -> Answer:
        """What a worker does with one message from the data-deletion queue."""
        return self.engine.handle_delete(body)

    def reconcile_once(self, now: datetime | None = None, *, limit: int = 500) -> int:
        """Ring again runs that nothing would move; see ``relay.reconcile_once``."""
        return relay.reconcile_once(self, now or self.clock.now(), limit=limit)

    def relay_once(self, now: datetime | None = None, *, limit: int = 500) -> int:
        """Publish doorbells that are due; see ``relay.relay_once``."""
        return relay.relay_once(self, now or self.clock.now(), limit=limit)

    def visualise(self) -> str:
        """The status graph as mermaid ``stateDiagram-v2`` text."""
        return mermaid(self.definition)

    def __repr__(self) -> str:
        return f"<Workflow {self.name} statuses={len(self.definition.graph.nodes)} steps={len(self.definition.steps)}>"


def _step_route(engine: Engine[Any, Any], status: int, metrics: Metrics, queue: str) -> Handler:
    def handle(body: Any) -> Answer:
        started = time.perf_counter()
        answer = engine.handle_step(status, body)
        metrics.doorbell_answered(engine.definition.name, queue, time.perf_counter() - started, answer.outcome.value)
        return answer

    return handle


def _hook_route(hooks: HookRunner[Any, Any], event: str) -> Handler:
    def handle(body: Any) -> Answer:
        return hooks.handle(event, body)

    return handle


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    try:
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"callback payload is not bytes, str or JSON-serialisable: {exc}") from exc


def _caller(depth: int = 2) -> str:
    """``file:line`` of the code that called the public call (frame 0 is this, 1 the call itself)."""
    frame: Any = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
