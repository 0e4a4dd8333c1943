"""Defining schedules and firing their due slots: ``wf.schedule`` and the workers' maintenance round.

Exactly one run per slot, however many workers look: a due schedule is
leased to one worker at a time (``take_due_schedules``), and, should two ever
fire one slot (a lease outlived by a slow filter, a crash after the trigger
and before the outcome was kept), both insert the run with the same id
(``slot_run_id``) and the database keeps one. The schedule moves to its next
slot only once the outcome is kept; a slot whose filter or trigger failed is
tried again. Unlike the original (luno/workflow's ``Schedule``), a schedule
is a row in the database, not a loop in the calling process, and a failed
trigger does not skip its slot.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from .codec import ObjectCodec
from .errors import ConfigurationError, WorkflowInProgress
from .ports import Clock, ScheduleStore
from .schedules import (
    GRACE,
    CatchUp,
    Schedule,
    ScheduleSlot,
    SlotOutcome,
    Spec,
    check_catch_up,
    parse_spec,
    slot_run_id,
)
from .text import check_foreign_id

T = TypeVar("T")

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=20)
"""How long a worker holds a due schedule while it fires its slots; another takes over after it (still
within ``GRACE`` of the slot, so a worker that dies holding a schedule loses none of its slots)."""
ROUND_BUDGET = LEASE / 3
"""A round of one workflow's schedules takes on no more schedules or slots after this long."""
FILTER_TIMEOUT = timedelta(seconds=10)
"""A filter that has not answered by then fails its slot (which is tried again)."""
MAX_HUNG_FILTERS = 8
MIN_FAILED_SLOT_RETRY = timedelta(seconds=5)
MAX_FAILED_SLOT_RETRY = timedelta(minutes=5)

SlotFilter = Callable[[str, datetime], bool]
"""``filter(foreign_id, slot) -> bool``: False skips the slot. ``slot`` is aware, in the schedule's time zone."""

Trigger = Callable[[str, Any, str], str]
"""``trigger(foreign_id, initial_value, run_id) -> run_id``."""


class Scheduler(Generic[T]):
    """The schedules of one workflow: defined by callers, fired by workers."""

    def __init__(
        self,
        workflow_name: str,
        store: object,
        exists: Callable[[str], bool],
        clock: Clock,
        codec: ObjectCodec[T],
        trigger: Trigger,
        retry_after: timedelta,
    ) -> None:
        self.workflow_name = workflow_name
        self._store = store if isinstance(store, ScheduleStore) else None
        self._exists = exists
        self._clock = clock
        self._codec = codec
        self._trigger = trigger
        self._retry_after = max(retry_after, MIN_FAILED_SLOT_RETRY)
        self._hung: builtins.list[threading.Thread] = []

    @property
    def store(self) -> ScheduleStore:
        if self._store is None:
            raise ConfigurationError(
                "this workflow's store keeps no schedules (it does not implement ScheduleStore)",
                workflow=self.workflow_name,
            )
        return self._store

    def schedule(
        self,
        foreign_id: str,
        spec: str,
        *,
        initial_value: T | None,
        time_zone: str,
        catch_up: CatchUp,
        filter: SlotFilter | None,
    ) -> Schedule:
        check_foreign_id(foreign_id, workflow=self.workflow_name)
        parsed = parse_spec(spec, time_zone)
        check_catch_up(catch_up)
        now = self._clock.now()
        encoded = None if initial_value is None else self._codec.encode(initial_value, foreign_id=foreign_id)
        return self.store.put_schedule(
            Schedule(
                workflow_name=self.workflow_name,
                foreign_id=foreign_id,
                spec=parsed.text,
                time_zone=parsed.time_zone,
                catch_up=catch_up,
                initial_value=encoded,
                filter="" if filter is None else filter_ref(filter),
                next_slot=parsed.next_after(now),
                revision=1,
                created_at=now,
                updated_at=now,
            )
        )

    def unschedule(self, foreign_id: str) -> bool:
        return self.store.remove_schedule(self.workflow_name, foreign_id)

    def schedules(self) -> builtins.list[Schedule]:
        return self.store.schedules(self.workflow_name)

    def slots(self, foreign_id: str, limit: int) -> builtins.list[ScheduleSlot]:
        return self.store.schedule_slots(self.workflow_name, foreign_id, limit=limit)

    def fire_due(self, now: datetime, *, limit: int = 100) -> int:
        """Fire the slots due at ``now`` of schedules no other worker holds; return how many schedules were handled.

        A round stops taking on schedules after ``ROUND_BUDGET``: the ones
        left are leased until ``LEASE`` is over and then taken by the next
        round of any worker, still within ``GRACE`` of their slot. A schedule
        whose firing fails (a database error) is logged and left to its lease.
        """
        if self._store is None:
            return 0
        lease_until = now + LEASE
        due = self._store.take_due_schedules(self.workflow_name, now, lease_until, limit)
        started = time.monotonic()
        for done, schedule in enumerate(due):
            if time.monotonic() - started > ROUND_BUDGET.total_seconds():
                log.warning(
                    "schedules of workflow %s: this round took over %ss; %d due schedule(s) wait for the next "
                    "(more workers, or slower schedules, keep up)",
                    self.workflow_name, ROUND_BUDGET.total_seconds(), len(due) - done,
                )  # fmt: skip
                return done
            try:
                _Round(self, self._store, schedule, now, lease_until, started).fire()
            except Exception as exc:
                log.warning(
                    "schedule %s of workflow %s could not be fired: %s: %s",
                    schedule.foreign_id, self.workflow_name, type(exc).__name__, exc, exc_info=exc,
                )  # fmt: skip
        return len(due)

    def _filter(self, ref: str, foreign_id: str, slot: datetime) -> bool:
        """Ask the filter, in a thread of its own, for at most ``FILTER_TIMEOUT``; True only for ``True``.

        A filter that does not answer in time fails its slot; its (daemon)
        thread is left to finish on its own. Past ``MAX_HUNG_FILTERS`` such
        threads still running, filters are not called at all.
        """
        self._hung = [thread for thread in self._hung if thread.is_alive()]
        if len(self._hung) >= MAX_HUNG_FILTERS:
            raise RuntimeError(f"{len(self._hung)} filter calls of this workflow still hang: not calling {ref}")
        fn = resolve_filter(ref)
        box: dict[str, Any] = {}
        answered = threading.Event()

        def call() -> None:
            try:
                box["answer"] = fn(foreign_id, slot)
            except BaseException as exc:  # SystemExit in a filter must not end a worker's thread
                box["error"] = exc
            finally:
                answered.set()

        thread = threading.Thread(target=call, name="workflow-celery-filter", daemon=True)
        thread.start()
        if not answered.wait(FILTER_TIMEOUT.total_seconds()):
            self._hung.append(thread)
            raise RuntimeError(f"the filter {ref} did not answer within {FILTER_TIMEOUT.total_seconds():g}s")
        error = box.get("error")
        if isinstance(error, Exception):
            raise error
        if error is not None:
            raise RuntimeError(f"the filter {ref} raised {type(error).__name__}") from error
        answer = box.get("answer")
        if not isinstance(answer, bool):
            raise TypeError(f"the filter {ref} returned {answer!r}: a filter returns True or False")
        return answer

    def _retry_delay(self, slot: datetime, now: datetime) -> timedelta:
        """Half the failing slot's age, from ``retry_after`` up to ``MAX_FAILED_SLOT_RETRY``: a slot failing
        for an hour is tried every few minutes, not every few seconds."""
        return min(max(self._retry_after, (now - slot) / 2), MAX_FAILED_SLOT_RETRY)

    def _start(self, schedule: Schedule, spec: Spec, slot: datetime) -> tuple[SlotOutcome, str, str]:
        if schedule.filter and not self._filter(schedule.filter, schedule.foreign_id, spec.local(slot)):
            return SlotOutcome.FILTERED, "", f"{schedule.filter} said no"
        run_id = slot_run_id(self.workflow_name, schedule.foreign_id, slot)
        initial = None if schedule.initial_value is None else self._codec.decode(schedule.initial_value)
        try:
            self._trigger(schedule.foreign_id, initial, run_id)
        except WorkflowInProgress as exc:
            other = getattr(exc, "run_id", None)
            if other == run_id or self._exists(run_id):
                return SlotOutcome.TRIGGERED, run_id, "started by another worker"
            return SlotOutcome.SKIPPED, other or "", f"run {other or '(finished since)'} was still in progress"
        except ValueError:
            if not self._exists(run_id):
                raise
            return SlotOutcome.TRIGGERED, run_id, "started by another worker"
        return SlotOutcome.TRIGGERED, run_id, ""


class _Round:
    """Firing one leased schedule's due slots in one round: the lease is kept until its last slot is kept."""

    def __init__(
        self,
        scheduler: Scheduler[Any],
        store: ScheduleStore,
        schedule: Schedule,
        now: datetime,
        lease_until: datetime,
        started: float,
    ) -> None:
        self.s, self.store, self.schedule, self.now = scheduler, store, schedule, now
        self.lease_until, self.started = lease_until, started
        self.spec = parse_spec(schedule.spec, schedule.time_zone)

    def fire(self) -> None:
        schedule, spec, now = self.schedule, self.spec, self.now
        first = schedule.next_slot
        if schedule.last_outcome == SlotOutcome.FAILED and schedule.last_slot == first:
            # A worker saw this slot and it failed: it is tried again however late, never counted as missed.
            if not self._fire_slot(first, "", more=True):
                return
            first = spec.next_after(first)
        to_fire = spec.due(first, now)
        if first <= now - GRACE:
            missed, passed = spec.latest_due(first, now - GRACE)
            recent = spec.due(spec.next_after(missed), now)
            count = "many" if passed is None else str(passed + 1)
            if schedule.catch_up == "latest" and not recent:
                late = "" if passed == 0 else f"; {'many' if passed is None else passed} earlier slot(s) missed"
                self._fire_slot(missed, f"fired {_ago(missed, now)} late{late}", more=False)
                return
            detail = (
                f"{count} slot(s) missed (none fired within {GRACE.total_seconds():.0f}s of its time), up to this one"
            )
            log.warning("schedule %s of workflow %s: %s", schedule.foreign_id, self.s.workflow_name, detail)
            self._keep(missed, SlotOutcome.MISSED, "", detail, more=bool(recent))
            to_fire = recent
        for n, slot in enumerate(to_fire):
            over = time.monotonic() - self.started > ROUND_BUDGET.total_seconds()
            last = n == len(to_fire) - 1 or over
            if not self._fire_slot(slot, "", more=not last) or last:
                return

    def _fire_slot(self, slot: datetime, note: str, *, more: bool) -> bool:
        """Fire one slot and keep its outcome; False when it failed (it is tried again after a delay)."""
        s, schedule = self.s, self.schedule
        try:
            outcome, run_id, detail = s._start(schedule, self.spec, slot)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            delay = s._retry_delay(slot, self.now)
            log.warning(
                "schedule %s of workflow %s: slot %s failed, trying again in %ss: %s",
                schedule.foreign_id, s.workflow_name, slot.isoformat(), delay.total_seconds(), text, exc_info=exc,
            )  # fmt: skip
            failed = ScheduleSlot(s.workflow_name, schedule.foreign_id, slot, SlotOutcome.FAILED, "", text, self.now)
            self.store.record_slot(failed, schedule.revision, None, self.now + delay)
            return False
        self._keep(slot, outcome, run_id, "; ".join(d for d in (detail, note) if d), more=more)
        return True

    def _keep(self, slot: datetime, outcome: SlotOutcome, run_id: str, detail: str, *, more: bool) -> None:
        """Keep a slot's outcome and move the schedule on; the lease stays while ``more`` slots follow."""
        if outcome is not SlotOutcome.TRIGGERED:
            log.info(
                "schedule %s of workflow %s: slot %s %s: %s",
                self.schedule.foreign_id, self.s.workflow_name, slot.isoformat(), outcome, detail,
            )  # fmt: skip
        kept = ScheduleSlot(self.s.workflow_name, self.schedule.foreign_id, slot, outcome, run_id, detail, self.now)
        lease = self.lease_until if more else None
        self.store.record_slot(kept, self.schedule.revision, self.spec.next_after(slot), lease)


def _ago(slot: datetime, now: datetime) -> str:
    seconds = int((now - slot).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02}s"


def filter_ref(fn: SlotFilter) -> str:
    """``module:qualname`` of a module-level function, checked to import back to ``fn``.

    A schedule outlives the process that defined it, so its filter is kept
    by name, as Celery keeps tasks. A function of a module run with
    ``python -m`` is named by the module's import name. Raises
    ``ConfigurationError`` for a lambda, a nested function, a function of a
    script run as ``python file.py``, or anything else a worker could not
    import.
    """
    if isinstance(fn, str):
        raise ConfigurationError(f"a schedule's filter is the function itself, not its name: got {fn!r}")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname or "<" in qualname:
        raise ConfigurationError(f"a schedule's filter must be a module-level function a worker can import, got {fn!r}")
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is None or not spec.name:
            raise ConfigurationError(
                f"a schedule's filter must be a function a worker can import: {qualname} belongs to a script "
                "run as `python file.py`; move it into a module (or run the script with `python -m`)"
            )
        module = spec.name
    ref = f"{module}:{qualname}"
    try:
        found = resolve_filter(ref)
    except ConfigurationError:
        found = None
    if not _same_function(found, fn):
        raise ConfigurationError(
            f"a schedule's filter must be a module-level function a worker can import: {ref} does not import "
            "back to it (a function replaced by a decorator cannot be found by name)"
        )
    return ref


def _same_function(found: object, fn: object) -> bool:
    # Under `python -m`, importing the module by its name makes a second copy of it: same source, other objects.
    if found is fn:
        return True
    code, theirs = getattr(found, "__code__", None), getattr(fn, "__code__", None)
    return (
        code is not None
        and theirs is not None
        and getattr(found, "__qualname__", None) == getattr(fn, "__qualname__", None)
        and (code.co_filename, code.co_firstlineno) == (theirs.co_filename, theirs.co_firstlineno)
    )


def resolve_filter(ref: str) -> SlotFilter:
    """The function ``module:qualname`` names. Raises ``ConfigurationError`` if it cannot be imported."""
    module_name, _, qualname = ref.partition(":")
    try:
        found: Any = _import(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"schedule filter {ref} cannot be imported: {exc} (the worker imports it by name: keep filters in the "
            "app's module, in a module it imports, or in one on PYTHONPATH)"
        ) from exc
    if not callable(found):
        raise ConfigurationError(f"schedule filter {ref} is not callable")
    result: SlotFilter = found
    return result


def _import(module_name: str) -> Any:
    """Import ``module_name``; failing that, with the working directory on the path for the attempt.

    ``celery -A app`` finds the app's module in the working directory but
    leaves that directory off ``sys.path`` afterwards; a filter kept in a
    module beside the app's is found the same way.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != module_name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module_name)
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)
