"""``Run``: what a step receives, plus the special returns a step may give."""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .record import TypedRecord

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)


class DirectiveKind(enum.Enum):
    SKIP = "skip"
    SAVE_AND_REPEAT = "save_and_repeat"
    PAUSE = "pause"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Directive:
    """A step's answer that is not a status: skip, repeat, pause or cancel."""

    kind: DirectiveKind
    reason: str = ""


class Run(TypedRecord[T, S]):
    """The run a step, callback or timeout works on; mutate ``object`` freely.

    The special returns are methods so a step stays typed ``-> S``::

        def charge(run: Run[Order, OrderStatus]) -> OrderStatus:
            if run.object.charge_id:
                return run.skip()
            ...
    """

    def skip(self) -> S:
        """Change nothing: the message is acknowledged and the run stays where it is."""
        return cast(S, Directive(DirectiveKind.SKIP))

    def save_and_repeat(self) -> S:
        """Save the object and run this same step again (progress on long work)."""
        return cast(S, Directive(DirectiveKind.SAVE_AND_REPEAT))

    def pause(self, reason: str = "") -> S:
        """Pause the run (saving the object); ``wf.resume`` runs this step again."""
        return cast(S, Directive(DirectiveKind.PAUSE, reason))

    def cancel(self, reason: str = "") -> S:
        """Cancel the run (saving the object); it will never move again."""
        return cast(S, Directive(DirectiveKind.CANCEL, reason))


def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a step, callback, timer, timeout or hook function; an ``async def`` one runs to completion here.

    Workers run coroutine functions with ``asyncio.run``, one event loop per
    call: a step never shares a loop with another.

    A ``BaseException`` that is not an ``Exception`` (``class E(BaseException)``,
    ``GeneratorExit``, ``asyncio.CancelledError``) comes out as an ``Exception``
    of the same name, module, message and traceback (a :class:`RaisedBaseException`),
    so it is an ordinary failed attempt. ``KeyboardInterrupt`` and ``SystemExit``
    (and their subclasses) go through unchanged: they stop the process.
    """
    try:
        result = fn(*args)
        if inspect.iscoroutine(result):
            return asyncio.run(result)
        return result
    except (Exception, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raised = _as_exception(exc)
    # Raised outside the handler, so the replacement does not name ``exc`` as its context: it stands for it.
    raise raised


class RaisedBaseException(Exception):
    """Base of the stand-ins :func:`call_user` raises for a ``BaseException`` that is not an ``Exception``.

    Each stand-in type has the original type's name, qualified name and module,
    so the failure is recorded under the original type. ``original`` is the
    exception that was raised (None once pickled).
    """

    original: BaseException | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        cls = type(self)
        return (_restore, (cls.__module__, cls.__qualname__, self.args))


_STAND_INS: dict[tuple[str, str], type[RaisedBaseException]] = {}


def _stand_in_type(module: str, qualname: str) -> type[RaisedBaseException]:
    key = (module, qualname)
    cls = _STAND_INS.get(key)
    if cls is None:
        name = qualname.rsplit(".", 1)[-1]
        cls = type(name, (RaisedBaseException,), {"__module__": module, "__qualname__": qualname})
        _STAND_INS[key] = cls
    return cls


def _restore(module: str, qualname: str, args: tuple[Any, ...]) -> RaisedBaseException:
    return _stand_in_type(module, qualname)(*args)


def _as_exception(exc: BaseException) -> RaisedBaseException:
    original = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {original.__qualname__} object>"
    try:
        cls = _stand_in_type(str(original.__module__), str(original.__qualname__))
    except Exception:
        cls = RaisedBaseException
    # One argument, the original's text: str() of the stand-in is exactly the original's, whatever its __str__.
    stand_in = cls(message)
    stand_in.original = exc
    stand_in.__cause__ = exc.__cause__
    stand_in.__context__ = exc.__context__
    stand_in.__suppress_context__ = exc.__suppress_context__
    return stand_in.with_traceback(exc.__traceback__)
