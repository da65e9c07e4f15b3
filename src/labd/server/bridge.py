"""The one bridge between labd's threads and the server's event loop.

* Device calls go to the device's own call thread (:class:`labd.devices.CallWorker`)
  and are awaited here with a timeout; a hung device holds its one thread, never the
  server's.
* Other blocking work (starting a device stream, creating a device or task) runs on a
  small pool of ``labd-server-*`` threads.
* History rings (device streams, events, task progress) wake the loop through one
  coalescing waker per ring, so a writer thread pays one cheap call per event however
  many SSE clients read the ring.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from labd.devices import CallWorker
from labd.exceptions import DeviceTimeoutError
from labd.ring import EventRing

__all__ = ["Bridge", "RingWatcher"]

T = TypeVar("T")


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

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking framework work on the server's pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(func, *args, **kwargs))

    async def call(
        self,
        worker: CallWorker,
        timeout: float | None,
        func: Callable[..., T],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """Run a device call on its call thread, waiting at most ``timeout`` seconds."""
        future: Future[T] = worker.submit(func, *args, **kwargs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            worker.abandon(future)
            raise DeviceTimeoutError(
                f"call to device {worker.device_id!r} did not finish within {timeout} s"
            ) from None
        except asyncio.CancelledError:
            worker.abandon(future)
            raise

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
