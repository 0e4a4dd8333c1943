"""The async calls run inside a running event loop without blocking it.

A ticker task counts the loop's turns while each call runs against a store
whose writes take 200 ms, as a slow database would: a call that blocked the
loop would let it tick about once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from workflow_celery import AwaitTimeout, InvalidRunStateTransition, RunState
from workflow_celery.adapters.memory import MemoryStore
from workflow_celery.core.ports import OutboxMessage
from workflow_celery.core.record import Record
from workflow_celery.testing import in_process

from .workflows import Status, Thing, chain

SLOW_S = 0.2
TICK_S = 0.005
R = TypeVar("R")


class SlowStore(MemoryStore):
    """A memory store whose writes of runs take ``SLOW_S`` seconds."""

    def insert_run(self, record: Record, outbox: Sequence[OutboxMessage]) -> None:
        time.sleep(SLOW_S)
        super().insert_run(record, outbox)

    def update_run(self, record: Record, expected_version: int, outbox: Sequence[OutboxMessage], **kw: Any) -> bool:
        time.sleep(SLOW_S)
        return super().update_run(record, expected_version, outbox, **kw)


async def ticking(call: Callable[[], Awaitable[R]]) -> tuple[R, int]:
    """Await ``call()`` while a task ticks every ``TICK_S``; return its result and the ticks seen meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        result = await call()
    finally:
        task.cancel()
    return result, ticks


def test_atrigger_lets_the_loop_run_and_returns_the_run_id() -> None:
    wf, _broker = in_process(chain(), store=SlowStore())

    async def main() -> tuple[str, int]:
        return await ticking(lambda: wf.atrigger("thing-1", initial_value=Thing(name="a")))

    run_id, ticks = asyncio.run(main())
    assert wf.lookup(run_id).foreign_id == "thing-1"
    # 200 ms at 5 ms a tick: a blocked loop ticks once at most.
    assert ticks >= 10


def test_atrigger_raises_what_trigger_raises() -> None:
    wf, _broker = in_process(chain())
    asyncio.run(wf.atrigger("thing-1"))
    from workflow_celery import WorkflowInProgress

    with pytest.raises(WorkflowInProgress):
        asyncio.run(wf.atrigger("thing-1"))


def test_await_status_async_waits_for_the_workers_without_blocking_the_loop() -> None:
    wf, broker = in_process(chain(), store=SlowStore())
    broker.start(workers=1)
    try:

        async def main() -> tuple[Any, int]:
            run_id = await wf.atrigger("thing-2", initial_value=Thing(name="b"))
            return await ticking(lambda: wf.await_status_async("thing-2", run_id, Status.END, timeout=30))

        run, ticks = asyncio.run(main())
    finally:
        broker.stop()
    assert run.status is Status.END
    assert run.object.steps == ["start", "middle"]
    assert ticks >= 10  # two slow commits happened meanwhile


def test_await_status_async_times_out() -> None:
    wf, _broker = in_process(chain())  # nobody answers the doorbells

    async def main() -> float:
        run_id = await wf.atrigger("thing-3")
        start = time.monotonic()
        with pytest.raises(AwaitTimeout, match=r"did not reach END within 0\.3s"):
            await wf.await_status_async("thing-3", run_id, Status.END, timeout=0.3)
        return time.monotonic() - start

    waited = asyncio.run(main())
    assert 0.3 <= waited < 5


def test_run_control_calls_change_the_run_and_raise_as_the_sync_ones() -> None:
    wf, _broker = in_process(chain(), store=SlowStore())

    async def main() -> str:
        run_id = await wf.atrigger("thing-4")
        _, ticks = await ticking(lambda: wf.apause(run_id, "looking"))
        assert ticks >= 10
        assert wf.lookup(run_id).run_state is RunState.PAUSED
        await wf.aresume(run_id)
        assert wf.lookup(run_id).run_state is RunState.RUNNING
        with pytest.raises(InvalidRunStateTransition):
            await wf.aresume(run_id)
        await wf.acancel(run_id, "no longer needed")
        assert wf.lookup(run_id).run_state is RunState.CANCELLED
        await wf.adelete_data(run_id, "asked by the customer")
        return run_id

    run_id = asyncio.run(main())
    assert wf.lookup(run_id).run_state is RunState.REQUESTED_DATA_DELETED


def test_acallback_moves_a_waiting_run() -> None:
    from workflow_celery import Builder

    from .test_callbacks import Account, Signup, confirm, send_email

    b = Builder("signup-async", Account, Signup)
    b.add_step(Signup.STARTED, send_email, Signup.EMAIL_SENT)
    b.add_callback(Signup.EMAIL_SENT, confirm, Signup.CONFIRMED)
    wf, broker = in_process(b, store=SlowStore())

    async def main() -> int:
        run_id = await wf.atrigger("acct-1", initial_value=Account(email="a@example.com"))
        await asyncio.to_thread(broker.drain)
        await wf.await_status_async("acct-1", run_id, Signup.EMAIL_SENT, timeout=10)
        _, ticks = await ticking(lambda: wf.acallback("acct-1", Signup.EMAIL_SENT, {"token": "t-123"}))
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 10
    assert wf.latest("acct-1").status is Signup.CONFIRMED


def test_atrigger_records_the_line_that_awaited_it() -> None:
    wf, _broker = in_process(chain())

    async def main() -> str:
        return await wf.atrigger("thing-origin")  # the origin

    run_id = asyncio.run(main())
    origin = wf.lookup(run_id).meta.trace_origin
    assert origin.startswith(__file__ + ":")
    line = int(origin.rsplit(":", 1)[1])
    assert "# the origin" in Path(__file__).read_text().splitlines()[line - 1]


class HangingStore(MemoryStore):
    """Lookups hang for 2 s once told to: a lock, or a server that does not answer."""

    hang = False

    def lookup(self, run_id: str) -> Record:
        if self.hang:
            time.sleep(2.0)
        return super().lookup(run_id)


def test_await_status_async_gives_up_at_its_timeout_even_when_a_look_hangs() -> None:
    store = HangingStore()
    wf, _broker = in_process(chain(), store=store)

    async def main() -> float:
        run_id = await wf.atrigger("thing-hang")
        store.hang = True
        start = time.monotonic()
        with pytest.raises(AwaitTimeout, match="the database did not answer in time"):
            await wf.await_status_async("thing-hang", run_id, Status.END, timeout=0.3)
        return time.monotonic() - start

    waited = asyncio.run(main())
    assert 0.3 <= waited < 1.5  # not the 2 s of the hanging look
