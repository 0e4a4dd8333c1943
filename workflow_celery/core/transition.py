"""A transition: what a step, callback or timeout returned becomes the run's next version.

Every write of a run is one compare-and-set on its version, in the same
transaction as its history row and the doorbells the new version rings
(``Planner.plan``); those that ring now are published right after the
commit, as a fast path the outbox relay backs up. A write that loses the
compare-and-set changes nothing: something else (a pause, a cancel, a timeout,
a duplicate) moved the run first, and the result is discarded.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from .answer import Outcome
from .codec import ObjectCodec
from .definition import Definition
from .doorbell import Planner
from .errors import InvalidTransition
from .ports import Clock, Dispatcher, Metrics, OutboxMessage, RunStore
from .record import Meta, Record
from .run import Directive, DirectiveKind, Run
from .run_state import RunState, check_transition

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)

log = logging.getLogger(__name__)


class Transitions(Generic[T, S]):
    """Writes the next versions of a workflow's runs."""

    def __init__(
        self,
        definition: Definition[T, S],
        store: RunStore,
        dispatcher: Dispatcher,
        clock: Clock,
        codec: ObjectCodec[T],
        planner: Planner,
        metrics: Metrics,
    ) -> None:
        self.definition = definition
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.codec = codec
        self.planner = planner
        self.metrics = metrics

    def next_record(
        self,
        current: Record,
        *,
        status: int | None = None,
        run_state: RunState | None = None,
        obj: bytes | None = None,
        reason: str | None = None,
        now: datetime,
    ) -> Record:
        """``current``'s next version: one more than its version, ``now`` as its time, the rest as given."""
        new_status = current.status if status is None else status
        return Record(
            workflow_name=current.workflow_name,
            foreign_id=current.foreign_id,
            run_id=current.run_id,
            run_state=current.run_state if run_state is None else run_state,
            status=new_status,
            object=current.object if obj is None else obj,
            created_at=current.created_at,
            updated_at=now,
            meta=Meta(
                version=current.meta.version + 1,
                run_state_reason=current.meta.run_state_reason if reason is None else reason,
                status_description=self.definition.status_name(new_status),
                trace_origin=current.meta.trace_origin,
            ),
        )

    def commit(
        self,
        new: Record,
        current: Record,
        now: datetime,
        *,
        reset_errors: bool = False,
        keep_running: bool = False,
    ) -> bool:
        """Compare-and-set ``new`` over ``current`` (its version), then ring the next doorbells; False if it lost.

        ``keep_running``: the write is not made by the attempt that holds the run's step (an operator, a
        callback), so a step still running keeps the run until it ends (``RunStore.update_run``).
        """
        bells = self.planner.plan(new, now)
        if not self.store.update_run(
            new, current.meta.version, bells.all, reset_errors=reset_errors, keep_running=keep_running
        ):
            return False
        if new.run_state != current.run_state:
            self.metrics.run_state_changed(self.definition.name, current.run_state, new.run_state)
        self.publish(bells.now)
        return True

    def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish right after a commit; a failure only delays the run until the relay rings again.

        A write made in the caller's transaction is committed only with it:
        its messages wait for that commit (``RunStore.after_commit``).
        """
        if not messages:
            return
        if not self.store.after_commit(lambda: self._send(messages)):
            self._send(messages)

    def _send(self, messages: Sequence[OutboxMessage]) -> None:
        try:
            self.dispatcher.publish(messages)
        except Exception as exc:
            # A broker that is down fails every call: one line each, the chained tracebacks at DEBUG.
            extra = {"workflow": self.definition.name, "run_ids": [m.run_id for m in messages]}
            text = " ".join(str(exc).split())
            log.warning(
                "publishing %d message(s) failed; the outbox relay will publish them again: %s",
                len(messages),
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
                extra=extra,
            )
            log.debug("publishing %d message(s) failed", len(messages), exc_info=True, extra=extra)

    def change_run_state(
        self, record: Record, target: RunState, reason: str, now: datetime, *, keep_running: bool = False
    ) -> bool:
        """A checked run-state change (pause, resume, cancel, delete request) as one compare-and-set.

        Raises ``InvalidRunStateTransition`` naming both states when the
        table of run-state changes does not allow it. A resumed run gets its
        full budget of attempts again.
        """
        check_transition(
            record.run_state, target, workflow=self.definition.name, run_id=record.run_id,
            foreign_id=record.foreign_id, by_hand=True,
        )  # fmt: skip
        new = self.next_record(record, run_state=target, reason=reason, now=now)
        return self.commit(new, record, now, reset_errors=target == RunState.RUNNING, keep_running=keep_running)

    def pause(self, record: Record, reason: str, now: datetime) -> bool:
        """Pause an active run (a just-started one is seen as running); False if something else moved it first."""
        current = record.run_state.as_active
        check_transition(current, RunState.PAUSED, workflow=self.definition.name, run_id=record.run_id)
        new = self.next_record(record, run_state=RunState.PAUSED, reason=reason, now=now)
        return self.commit(new, record, now)

    def apply(
        self,
        source: int,
        destinations: tuple[int, ...],
        record: Record,
        run: Run[T, S],
        result: object,
        what: str,
        *,
        keep_running: bool = False,
    ) -> Outcome:
        """Commit what a step, callback or timeout returned for ``record``.

        A status moves the run there (completing it at a terminal status), a
        directive skips, saves and repeats, pauses or cancels. Raises
        ``InvalidTransition`` for a status that is not an allowed destination
        and ``SerializationError`` for an object that cannot be stored: failed
        attempts, like an exception from the function itself. Returns
        ``SUPERSEDED`` when the run changed meanwhile (the result is discarded).
        """
        now = self.clock.now()
        if isinstance(result, Directive):
            return self._apply_directive(record, run, result, now, keep_running)
        dest = _as_status(result)
        if dest is None or dest not in destinations:
            raise InvalidTransition(
                f"{what} returned {self._describe(result)}, which is not an allowed destination of "
                f"{self.definition.status_name(source)} (allowed: "
                f"{', '.join(self.definition.status_name(d) for d in destinations)})",
                workflow=self.definition.name,
                foreign_id=record.foreign_id,
                run_id=record.run_id,
            )
        obj = self.codec.encode(run.object, run_id=record.run_id, foreign_id=record.foreign_id)
        terminal = self.definition.graph.is_terminal(dest)
        run_state = RunState.COMPLETED if terminal else RunState.RUNNING
        new = self.next_record(record, status=dest, run_state=run_state, obj=obj, now=now)
        if not self.commit(new, record, now, keep_running=keep_running):
            return self.superseded(record)
        return Outcome.COMPLETED if terminal else Outcome.MOVED

    def _apply_directive(
        self, record: Record, run: Run[T, S], directive: Directive, now: datetime, keep_running: bool
    ) -> Outcome:
        if directive.kind is DirectiveKind.SKIP:
            return Outcome.SKIPPED
        obj = self.codec.encode(run.object, run_id=record.run_id, foreign_id=record.foreign_id)
        if directive.kind is DirectiveKind.SAVE_AND_REPEAT:
            new = self.next_record(record, run_state=RunState.RUNNING, obj=obj, now=now)
            outcome = Outcome.REPEATED
        else:
            target = RunState.PAUSED if directive.kind is DirectiveKind.PAUSE else RunState.CANCELLED
            current = record.run_state.as_active
            check_transition(
                current, target, workflow=self.definition.name, run_id=record.run_id, foreign_id=record.foreign_id
            )
            new = self.next_record(record, run_state=target, obj=obj, reason=directive.reason, now=now)
            outcome = Outcome.PAUSED if target == RunState.PAUSED else Outcome.CANCELLED
        if not self.commit(new, record, now, keep_running=keep_running):
            return self.superseded(record)
        return outcome

    def superseded(self, record: Record) -> Outcome:
        """Log that a result was discarded because the run changed first."""
        log.info(
            "run %s of workflow %s changed while its step ran (paused, cancelled or a duplicate won); "
            "the step's result is discarded",
            record.run_id,
            self.definition.name,
            extra={"workflow": self.definition.name, "run_id": record.run_id},
        )
        return Outcome.SUPERSEDED

    def _describe(self, value: object) -> str:
        dest = _as_status(value)
        return self.definition.status_name(dest) if dest is not None else repr(value)


def _as_status(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)
