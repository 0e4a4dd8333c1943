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
    """
    result = fn(*args)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result
