"""``Builder``: define a workflow's steps and hooks, then ``build`` it onto an app and a store."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from .adapters.inprocess import InProcessBroker
from .core.connectors import ConnectorFn, ConnectorSource, ConnectorSpec
from .core.definition import HOOK_EVENTS, CallbackSpec, Definition, HookSpec, StepSpec, TimeoutSpec
from .core.errors import ConfigurationError
from .core.hooks import hook_name
from .core.options import StepOptions, WorkflowOptions
from .core.ports import Clock, RecordStore, SystemClock
from .core.record import TypedRecord
from .core.run import Run
from .core.status_graph import StatusGraph
from .core.workflow import Workflow

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)
F = TypeVar("F", bound=Callable[..., Any])

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class StepHandle(Generic[T, S]):
    """Returned by ``add_step``; ``with_options`` sets the step's options."""

    def __init__(self, builder: Builder[T, S], status: int) -> None:
        self._builder = builder
        self._status = status

    def with_options(self, **options: Any) -> StepHandle[T, S]:
        """Set the step's options: ``err_backoff``, ``max_backoff``, ``consume_lag`` (timedelta),
        ``pause_after_err_count``, ``parallel_count``.

        See ``docs/steps.md`` ("Step options"). Raises ``ConfigurationError``
        for an unknown name or a bad value.
        """
        builder = self._builder
        spec = builder._definition.steps[self._status]
        opts = StepOptions.from_kwargs(builder.name, builder._definition.status_name(self._status), options)
        builder._definition.steps[self._status] = StepSpec(
            status=spec.status, fn=spec.fn, destinations=spec.destinations, options=opts, is_async=spec.is_async
        )
        return self


class Builder(Generic[T, S]):
    """Describe a workflow: its object type, its statuses and the steps between them.

    ``Builder("order-processing", Order, OrderStatus)`` infers ``T=Order`` and
    ``S=OrderStatus`` for type checkers.
    """

    def __init__(self, name: str, object_type: type[T], status_type: type[S]) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigurationError(
                f"workflow name {name!r} must start with a letter or digit and contain only letters, digits, "
                "'-' and '_' (it prefixes queue names)"
            )
        if not (isinstance(status_type, type) and issubclass(status_type, enum.IntEnum)):
            raise ConfigurationError(f"status_type must be an enum.IntEnum, got {status_type!r}", workflow=name)
        if not isinstance(object_type, type) and getattr(object_type, "__origin__", None) is not dict:
            raise ConfigurationError(f"object_type must be a type, got {object_type!r}", workflow=name)
        self.name = name
        self._definition: Definition[T, S] = Definition(
            name=name, object_type=object_type, status_type=status_type, graph=StatusGraph(workflow=name)
        )
        self._built = False

    def _status_value(self, status: Any, role: str) -> int:
        status_type = self._definition.status_type
        if not isinstance(status, status_type):
            raise ConfigurationError(f"{role} {status!r} is not a member of {status_type.__name__}", workflow=self.name)
        if int(status) <= 0:
            raise ConfigurationError(
                f"{role} {status.name}={int(status)} is reserved: 0 and negative values cannot be part of the graph",
                workflow=self.name,
            )
        return int(status)

    def add_step(self, from_status: S, fn: Callable[[Run[T, S]], Any], *allowed_to: S) -> StepHandle[T, S]:
        """Run ``fn(run) -> S`` whenever a run reaches ``from_status``.

        ``fn`` may move the run only to one of ``allowed_to``; it may also return
        ``run.skip()``, ``run.save_and_repeat()``, ``run.pause(reason)`` or
        ``run.cancel(reason)``. Raising an exception retries the step.
        """
        if self._status_value(from_status, "from status") in self._definition.steps:
            raise ConfigurationError(
                f"a step for {from_status.name} already exists: only one step can consume a status",
                workflow=self.name,
            )
        source, dests = self._edges("step", from_status, allowed_to, fn=fn)
        self._definition.steps[source] = StepSpec(
            status=source,
            fn=fn,
            destinations=dests,
            options=StepOptions(),
            is_async=inspect.iscoroutinefunction(fn),
        )
        return StepHandle(self, source)

    def add_callback(self, from_status: S, fn: Callable[[Run[T, S], bytes], Any], *allowed_to: S) -> None:
        """Let ``wf.callback(foreign_id, from_status, payload)`` move a run waiting at ``from_status``.

        ``fn(run, payload: bytes) -> S`` runs in the caller's process (a webhook
        view, say); it may return the special values a step may. Several
        callbacks may wait on one status: they are tried in order until one
        moves the run.
        """
        source, dests = self._edges("callback", from_status, allowed_to, fn=fn)
        self._definition.callbacks.setdefault(source, []).append(
            CallbackSpec(status=source, fn=fn, destinations=dests, is_async=inspect.iscoroutinefunction(fn))
        )

    def add_connector(self, name: str, source: ConnectorSource, fn: ConnectorFn) -> None:
        """Hand every event of ``source`` to ``fn(wf, event)`` in the workers, once it succeeds.

        ``source``: ``RedisStreamSource`` or ``KombuQueueSource``
        (``workflow_celery.connectors``), or your own ``ConnectorSource``.
        ``fn`` typically triggers a run (``wf.trigger(event.foreign_id)``) or
        calls one back; a run it triggers gets an id derived from the event,
        so an event delivered twice starts one run. An event is acknowledged
        only after ``fn`` returned; ``fn`` raising retries it with backoff,
        and after the source's ``max_attempts`` it is parked as a dead
        letter. Raises ``ConfigurationError`` for a bad or repeated name.
        """
        self._check_open()
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigurationError(
                f"connector name {name!r} must start with a letter or digit and contain only letters, digits, "
                "'-' and '_'",
                workflow=self.name,
            )
        if name in self._definition.connectors:
            raise ConfigurationError(f"connector {name!r} is added twice", workflow=self.name)
        if not callable(getattr(source, "open", None)):
            raise ConfigurationError(f"connector {name!r}: {source!r} is not a ConnectorSource", workflow=self.name)
        if not callable(fn):
            raise ConfigurationError(f"connector {name!r}: fn must be callable, got {fn!r}", workflow=self.name)
        self._definition.connectors[name] = ConnectorSpec(name=name, source=source, fn=fn)

    def add_timeout(
        self,
        from_status: S,
        timer: Callable[[Run[T, S], datetime], datetime | None],
        fn: Callable[[Run[T, S], datetime], Any],
        *allowed_to: S,
    ) -> None:
        """Run ``fn(run, now) -> S`` when a run has waited at ``from_status`` until ``timer(run, now)``.

        The timer is asked when the run enters ``from_status``; ``None`` means no
        timeout for this run. The due time is kept in the database (never as a
        broker ETA) and the timeout is cancelled when the run leaves the status.
        Use :func:`duration_timer` or :func:`time_timer` for the common cases.
        """
        source, dests = self._edges("timeout", from_status, allowed_to, fn=fn, timer=timer)
        self._definition.timeouts.setdefault(source, []).append(
            TimeoutSpec(status=source, timer=timer, fn=fn, destinations=dests, is_async=inspect.iscoroutinefunction(fn))
        )

    def _edges(
        self, what: str, from_status: S, allowed_to: tuple[S, ...], **functions: Any
    ) -> tuple[int, tuple[int, ...]]:
        """Check a step, callback or timeout's statuses and functions; add its edges to the graph."""
        self._check_open()
        source = self._status_value(from_status, "from status")
        for role, f in functions.items():
            if not callable(f):
                raise ConfigurationError(
                    f"{what} {role} for {from_status.name} is not callable: {f!r}", workflow=self.name
                )
        if not allowed_to:
            raise ConfigurationError(
                f"{what} for {from_status.name} has no allowed destination: pass at least one status",
                workflow=self.name,
            )
        dests = tuple(self._status_value(s, "destination") for s in allowed_to)
        self._definition.graph.add_edges(source, dests)
        return source, dests

    def _add_hook(self, event: str, method: str, fn: F | None, name: str | None) -> F | Callable[[F], F]:
        if fn is None:
            # ``@b.on_complete(name="...")``: the decorator is what was asked for.
            return lambda f: self._register_hook(event, method, f, name)
        return self._register_hook(event, method, fn, name)

    def _register_hook(self, event: str, method: str, fn: F, name: str | None) -> F:
        self._check_open()
        if not callable(fn):
            raise ConfigurationError(f"{method} hook is not callable: {fn!r}", workflow=self.name)
        chosen = hook_name(fn, name, event=method, workflow=self.name)
        hooks = self._definition.hooks.setdefault(event, [])
        if any(h.name == chosen for h in hooks):
            raise ConfigurationError(
                f"an {method} hook named {chosen!r} is already registered: a hook's name identifies its pending "
                "messages, so each hook of an event needs its own (register one of them with name=...)",
                workflow=self.name,
            )
        hooks.append(HookSpec(name=chosen, fn=fn))
        return fn

    @overload
    def on_complete(
        self, fn: Callable[[TypedRecord[T, S]], None], *, name: str | None = None
    ) -> Callable[[TypedRecord[T, S]], None]: ...
    @overload
    def on_complete(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def on_complete(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_complete(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Register a hook run when a run reaches a terminal status.

        ``name`` identifies the hook among the ``on_complete`` hooks (default:
        the function's qualified name); two hooks of one event may not share
        a name (``ConfigurationError``). Returns ``fn``, so it also works as
        ``@b.on_complete`` or ``@b.on_complete(name="send-confirmation")``.
        """
        return self._add_hook("completed", "on_complete", fn, name)

    @overload
    def on_cancel(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def on_cancel(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_cancel(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Register a hook run when a run is cancelled; ``name`` as for ``on_complete``."""
        return self._add_hook("cancelled", "on_cancel", fn, name)

    @overload
    def on_pause(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def on_pause(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_pause(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Register a hook run when a run is paused, by hand or after errors; ``name`` as for ``on_complete``."""
        return self._add_hook("paused", "on_pause", fn, name)

    @overload
    def on_data_deleted(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def on_data_deleted(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_data_deleted(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Register a hook run once a run's data has been deleted; ``name`` as for ``on_complete``."""
        return self._add_hook("data_deleted", "on_data_deleted", fn, name)

    def _check_open(self) -> None:
        if self._built:
            raise ConfigurationError("the builder was already built; create a new Builder", workflow=self.name)

    def build(
        self, app: Any, store: RecordStore | str, *, clock: Clock | None = None, **options: Any
    ) -> Workflow[T, S]:
        """Bind the workflow to a Celery app (or an in-process broker) and a store.

        Registers one Celery task and queue per status with a step
        (``{workflow}.{status}``). ``options``: ``err_backoff``, ``max_backoff``,
        ``pause_after_err_count``, ``redeliver_after``, ``max_redeliver_interval``,
        ``relay_interval``, ``auto_resume_after``. Misconfiguration raises
        ``ConfigurationError`` here, never later in a worker.
        """
        self._check_open()
        definition = self._definition
        if options.get("metrics") is None:
            from .adapters.prometheus import PrometheusMetrics

            options["metrics"] = PrometheusMetrics.for_registry()
        opts = WorkflowOptions.from_kwargs(self.name, options)
        if not definition.steps:
            raise ConfigurationError("the workflow has no starting point: add at least one step", workflow=self.name)
        if not definition.graph.starting_nodes():
            raise ConfigurationError(
                "the workflow has no starting point: every status with a step is also a destination "
                "(a cycle); pass start_at to trigger is not enough, the graph needs a status that is only left",
                workflow=self.name,
            )
        for event in HOOK_EVENTS:
            definition.hooks.setdefault(event, [])
        if isinstance(store, str):
            from .adapters.sql import SQLStore

            store = SQLStore(store)
        if not isinstance(store, RecordStore):
            raise ConfigurationError(
                f"store {store!r} does not implement the record store protocol", workflow=self.name
            )
        self._built = True
        return _attach(app, definition, store, clock or SystemClock(), opts)


def _attach(
    app: Any, definition: Definition[Any, Any], store: RecordStore, clock: Clock, options: WorkflowOptions
) -> Workflow[Any, Any]:
    """Bind a definition to whatever delivers its messages: an ``InProcessBroker``, or a Celery app."""
    if isinstance(app, InProcessBroker):
        return app.attach(definition, store, clock, options)
    # Celery is imported here, not at the top: an app that only uses the in-process broker
    # (tests, the demo) never pays for it.
    from .adapters.celery import attach_to_celery

    return attach_to_celery(app, definition, store, clock, options)


def duration_timer(duration: timedelta) -> Callable[[Any, datetime], datetime]:
    """A timer that expires ``duration`` after the run entered the status."""
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        raise ConfigurationError(f"duration_timer needs a positive timedelta, got {duration!r}")

    def timer(run: Any, now: datetime) -> datetime:
        return now + duration

    return timer


def time_timer(when: datetime) -> Callable[[Any, datetime], datetime]:
    """A timer that expires at a fixed, timezone-aware time."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ConfigurationError(f"time_timer needs a timezone-aware datetime, got {when!r}")

    def timer(run: Any, now: datetime) -> datetime:
        return when

    return timer
