"""``Bridge.call`` on its own loop: results, shared deadlines, cancellation."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")

import labd
from labd.calls import CallWorker, DeviceCall
from labd.server.bridge import Bridge


def on(worker: CallWorker, func: Any) -> DeviceCall:
    """``func`` as a call on ``worker``'s thread, as the daemon would make it ready."""
    return DeviceCall(worker, func, getattr(func, "__name__", "call"))


def test_calls_return_results_and_leave_no_deadlines_behind() -> None:
    async def main() -> list[int]:
        bridge = Bridge(max_workers=1)
        workers = [CallWorker(f"dev{i}") for i in range(3)]
        try:
            results = await asyncio.gather(
                *(bridge.call(on(workers[i % 3], lambda x: x * 2), 30.0, (i,)) for i in range(300))
            )
            waiters = bridge._waiters
            assert waiters is not None and not waiters._deadlines
            with pytest.raises(KeyError):
                await bridge.call(on(workers[0], {}.__getitem__), 30.0, ("missing",))
            return results
        finally:
            for worker in workers:
                assert worker.close(5.0)
            bridge.close(timeout=5.0)

    assert asyncio.run(main()) == [i * 2 for i in range(300)]


def _loop_factories() -> list[Any]:
    factories: list[Any] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:
        return factories
    return [*factories, uvloop.new_event_loop]


@pytest.mark.parametrize("loop_factory", _loop_factories(), ids=lambda f: f.__module__)
def test_each_call_times_out_at_its_own_deadline(loop_factory: Any) -> None:
    # One timer serves all deadlines: a shorter timeout arriving after a longer one must
    # still fire first, and the longer ones must fire after it, each near its own time.
    timeouts = [0.1 * (i + 1) for i in range(6)]
    random.Random(7).shuffle(timeouts)
    release = threading.Event()

    async def main() -> list[tuple[float, float]]:
        bridge = Bridge(max_workers=1)
        workers = [CallWorker(f"hung{i}") for i in range(len(timeouts))]
        t0 = time.monotonic()

        async def one(worker: CallWorker, timeout: float) -> tuple[float, float]:
            with pytest.raises(labd.DeviceTimeoutError, match=f"within {timeout}"):
                await bridge.call(on(worker, release.wait), timeout, (30,))
            return timeout, time.monotonic() - t0

        try:
            return await asyncio.gather(
                *(one(w, t) for w, t in zip(workers, timeouts, strict=True))
            )
        finally:
            release.set()
            for worker in workers:
                assert worker.close(5.0)
            bridge.close(timeout=5.0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        fired = runner.run(main())
    for timeout, elapsed in fired:
        assert timeout - 0.002 <= elapsed < timeout + 2.0  # loop timers count milliseconds
    order = [timeout for timeout, _ in sorted(fired, key=lambda pair: pair[1])]
    assert order == sorted(timeouts)


def test_a_cancelled_caller_drops_its_queued_call() -> None:
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        bridge = Bridge(max_workers=1)
        worker = CallWorker("line")
        try:
            first = asyncio.ensure_future(bridge.call(on(worker, release.wait), 30.0, (30,)))
            second = asyncio.ensure_future(bridge.call(on(worker, ran.append), 30.0, ("second",)))
            await asyncio.sleep(0)  # both queued, the first one running
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            release.set()
            assert await first is True
            assert await bridge.call(on(worker, ran.append), 30.0, ("third",)) is None
        finally:
            release.set()
            assert worker.close(5.0)
            bridge.close(timeout=5.0)

    asyncio.run(main())
    assert ran == ["third"]
