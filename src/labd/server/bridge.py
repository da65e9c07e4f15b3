"""The one bridge between labd's threads and the server's event loop.

* Device calls (a :class:`labd.calls.DeviceCall` the daemon made ready) go to the
  device's own call thread and are awaited here with a timeout; a hung device holds
  its one thread, never the server's.
* Other blocking work (starting a device stream, creating a device or task) runs on a
  small pool of ``labd-server-*`` threads.
* History rings (device streams, events, task progress) wake the loop through one
  coalescing waker per ring, so a writer thread pays one cheap call per event however
  many SSE clients read the ring.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from labd.calls import CallJob, DeviceCall
from labd.ring import EventRing

__all__ = ["Bridge", "CallWaiters", "RingWatcher"]

T = TypeVar("T")

_TIMER_GRANULARITY_S = 0.001


class CallWaiters:
    """The device calls one loop is waiting for, woken when they finish or time out.

    Call threads hand over finished calls here; a batch of them costs one thread-safe
    wake-up of the loop, however many calls it holds. Deadlines share one loop timer,
    set for the earliest: a timer per call would cost more than the rest of the call's
    bookkeeping together.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._finished: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._scheduled = False
        self._deadlines: dict[asyncio.Future[bool], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    def finished(self, job: CallJob) -> None:
        """A call thread: ``job`` is done, wake its waiter (the job's tag)."""
        self._finished.append(job.tag)
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            self._scheduled = False

    def _wake(self) -> None:
        self._scheduled = False  # first: a call finishing from here on schedules again
        finished = self._finished
        while finished:
            waiter = finished.popleft()
            if not waiter.done():
                waiter.set_result(True)

    def expire_after(self, waiter: asyncio.Future[bool], timeout: float) -> None:
        """Settle ``waiter`` with False after ``timeout`` s unless it is settled before."""
        deadline = self.loop.time() + timeout
        self._deadlines[waiter] = deadline
        if deadline < self._timer_due:
            self._arm(deadline)

    def forget(self, waiter: asyncio.Future[bool]) -> None:
        """``waiter`` no longer needs its deadline."""
        self._deadlines.pop(waiter, None)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = deadline
        self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_due = None, math.inf
        # uvloop's timers count whole milliseconds and may fire up to one early: what is
        # due within that is due now, instead of re-arming for a fraction of a millisecond.
        now = self.loop.time() + _TIMER_GRANULARITY_S
        earliest = math.inf
        for waiter, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[waiter]
                if not waiter.done():
                    waiter.set_result(False)
            else:
                earliest = min(earliest, deadline)
        if earliest < math.inf:
            self._arm(earliest)


class RingWatcher:
    """Lets coroutines on one loop wait for a ring's next append."""

    def __init__(self, ring: EventRing, loop: asyncio.AbstractEventLoop) -> None:
        self.ring = ring
        self.users = 0
        self._loop = loop
        self._pending = False
        self._event = asyncio.Event()
        ring.add_waker(self._wake)

    def _wake(self) -> None:
        # Writer's thread: schedule at most one wake-up until the loop has run it.
        if self._pending:
            return
        self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # loop closed during shutdown
            self._pending = False

    def _fire(self) -> None:
        self._pending = False
        event, self._event = self._event, asyncio.Event()
        event.set()

    def wake_all(self) -> None:
        """Wake every waiter now (used at shutdown); loop thread only."""
        self._fire()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next append; False on timeout."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.ring.remove_waker(self._wake)


class Bridge:
    """Thread pool, call timeouts and ring watchers for one running server."""

    def __init__(self, max_workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="labd-server")
        self._watchers: dict[int, RingWatcher] = {}
        self._waiters: CallWaiters | None = None

    def _call_waiters(self, loop: asyncio.AbstractEventLoop) -> CallWaiters:
        waiters = self._waiters
        if waiters is None or waiters.loop is not loop:
            waiters = self._waiters = CallWaiters(loop)
        return waiters

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking framework work on the server's pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(func, *args, **kwargs))

    async def call(
        self,
        call: DeviceCall,
        timeout: float | None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Run a device call on its call thread, waiting at most ``timeout`` seconds."""
        waiters = self._call_waiters(asyncio.get_running_loop())
        waiter: asyncio.Future[bool] = waiters.loop.create_future()
        job = call.enqueue(args, kwargs if kwargs is not None else {}, waiters.finished, waiter)
        if timeout is not None:
            waiters.expire_after(waiter, timeout)
        try:
            in_time = await waiter
        except asyncio.CancelledError:
            call.abandon(job)
            raise
        finally:
            waiters.forget(waiter)
        if not in_time:
            call.expire(job, timeout)
        return job.result()

    def watch(self, ring: EventRing) -> RingWatcher:
        """The watcher for ``ring`` on this loop, shared by its readers; pair with ``unwatch``."""
        watcher = self._watchers.get(id(ring))
        if watcher is None or watcher.ring is not ring:
            watcher = RingWatcher(ring, asyncio.get_running_loop())
            self._watchers[id(ring)] = watcher
        watcher.users += 1
        return watcher

    def unwatch(self, watcher: RingWatcher) -> None:
        watcher.users -= 1
        if watcher.users <= 0:
            watcher.close()
            if self._watchers.get(id(watcher.ring)) is watcher:
                del self._watchers[id(watcher.ring)]

    def wake_all(self) -> None:
        for watcher in list(self._watchers.values()):
            watcher.wake_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop the pool, waiting at most ``timeout`` seconds for work in progress."""
        threads = list(getattr(self._pool, "_threads", ()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
