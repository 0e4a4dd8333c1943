"""A built workflow's calls for async callers: async Django views, ASGI apps, asyncio services.

Each ``a…`` call runs its synchronous counterpart in a thread of the event
loop's default executor (``asyncio.to_thread``), so the loop keeps serving
other tasks while the database and the broker answer; the call returns or
raises exactly what the synchronous one does. ``await_status_async`` makes
each look at the database in a thread as well and waits between looks with
``asyncio.sleep``. The thread carries the caller's ``contextvars``.

Cancelling the awaiting task does not stop a call already running in its
thread: a trigger whose task is cancelled may still have started the run
(look it up by foreign id, as after any lost reply).
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import AwaitTimeout
from .run import Run

LOOK_GRACE_S = 0.1
"""How long past the deadline a look at the database may still answer before ``await_status_async`` gives up."""

T = TypeVar("T")
S = TypeVar("S", bound=enum.IntEnum)


class AsyncCalls(Generic[T, S]):
    """``atrigger``, ``acallback``, ``await_status_async`` and the run-control calls, for ``Workflow``."""

    if TYPE_CHECKING:  # provided by Workflow

        @property
        def name(self) -> str: ...

        def _trigger(self, foreign_id: str, initial_value: T | None, start_at: S | None, origin: str) -> str: ...
        def callback(self, foreign_id: str, status: S, payload: bytes | str | Any) -> None: ...
        def pause(self, run_id: str, reason: str = "") -> None: ...
        def resume(self, run_id: str) -> None: ...
        def cancel(self, run_id: str, reason: str = "") -> None: ...
        def delete_data(self, run_id: str, reason: str = "") -> None: ...
        def _await_deadline(self, run_id: str, status: S, timeout: float | None) -> float | None: ...
        def _await_poll(
            self, foreign_id: str, run_id: str, status: S, timeout: float | None, deadline: float | None, poll: float
        ) -> tuple[Run[T, S] | None, float]: ...

    async def atrigger(self, foreign_id: str, *, initial_value: T | None = None, start_at: S | None = None) -> str:
        """``trigger`` without blocking the event loop: the run id; raises as ``trigger`` does.

        The run's ``trace_origin`` is the line that awaited this call, as
        ``trigger`` records the line that called it.
        """
        from .workflow import _caller

        origin = _caller()  # this coroutine's frame runs inside the awaiting one's: frame 2 is the caller
        return await asyncio.to_thread(self._trigger, foreign_id, initial_value, start_at, origin)

    async def acallback(self, foreign_id: str, status: S, payload: bytes | str | Any) -> None:
        """``callback`` without blocking the event loop; raises as ``callback`` does."""
        await asyncio.to_thread(self.callback, foreign_id, status, payload)

    async def await_status_async(
        self, foreign_id: str, run_id: str, status: S, *, timeout: float | None = None
    ) -> Run[T, S]:
        """``await_status`` for a coroutine: the run once at or past ``status``.

        Raises ``AwaitTimeout``, ``RecordNotFound`` and ``RunFinished`` as
        ``await_status`` does. Polls the database from 10 ms apart up to
        250 ms apart, sleeping with ``asyncio.sleep``. Unlike the synchronous
        call, ``timeout`` also bounds a look at a database that does not
        answer: the coroutine raises ``AwaitTimeout`` on time, and the look
        ends in its thread when the database answers.
        """
        from .awaiting import AWAIT_MAX_POLL, AWAIT_MIN_POLL

        deadline = self._await_deadline(run_id, status, timeout)
        poll = AWAIT_MIN_POLL
        while True:
            look = asyncio.to_thread(self._await_poll, foreign_id, run_id, status, timeout, deadline, poll)
            if deadline is None:
                found, sleep = await look
            else:
                try:
                    # The look itself raises AwaitTimeout at the deadline; this only cuts one that hangs.
                    found, sleep = await asyncio.wait_for(look, max(deadline - time.monotonic(), 0.0) + LOOK_GRACE_S)
                except TimeoutError:
                    raise AwaitTimeout(
                        f"run did not reach {status.name} within {timeout}s (the database did not answer in time)",
                        workflow=self.name,
                        foreign_id=foreign_id,
                        run_id=run_id,
                    ) from None
            if found is not None:
                return found
            await asyncio.sleep(sleep)
            poll = min(poll * 1.5, AWAIT_MAX_POLL)

    async def apause(self, run_id: str, reason: str = "") -> None:
        """``pause`` without blocking the event loop; raises ``InvalidRunStateTransition`` as ``pause`` does."""
        await asyncio.to_thread(self.pause, run_id, reason)

    async def aresume(self, run_id: str) -> None:
        """``resume`` without blocking the event loop."""
        await asyncio.to_thread(self.resume, run_id)

    async def acancel(self, run_id: str, reason: str = "") -> None:
        """``cancel`` without blocking the event loop."""
        await asyncio.to_thread(self.cancel, run_id, reason)

    async def adelete_data(self, run_id: str, reason: str = "") -> None:
        """``delete_data`` without blocking the event loop."""
        await asyncio.to_thread(self.delete_data, run_id, reason)
