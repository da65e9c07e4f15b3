"""Where a remote device call's time goes, measured in one process without sockets.

Run: ``python bench/calls.py`` (about half a minute). The labd app and a bare ASGI app
(the one in ``bench/server.py``) are driven straight through ASGI on the server's event
loop, one request at a time and 32 at once, and each row reports process CPU time per
call (the best of five runs). Rows:

* the bare app: parse the body, send the reply;
* labd's app with the device call run inline on the event loop (for measurement only:
  labd itself never does this) — the cost of labd's checks;
* labd's app as it runs: the call crosses to the device's call thread and back;
* the crossing alone, ``Bridge.call``, against a minimal crossing (a queue, a future and
  one loop wake-up per batch, with no timeout, no busy detection and no dropping).
"""

from __future__ import annotations

import asyncio
import collections
import os
import platform
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from server import CALL_BODY, Echo, bare_app  # bench/server.py, beside this script

import labd
from labd.calls import CallWorker, DeviceCall
from labd.server.app import create_app
from labd.server.bridge import Bridge

RUNS = 5
CALLS = 20_000

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/devices/echo/call",
    "raw_path": b"/devices/echo/call",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(CALL_BODY)).encode()),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def cpu_per_call(make: Callable[[], Awaitable[None]], concurrency: int) -> float:
    """Best of RUNS: process CPU µs per call with ``concurrency`` calls in flight."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await make()

    async def run() -> None:
        await asyncio.gather(*(worker(CALLS // concurrency) for _ in range(concurrency)))

    best = float("inf")
    for _ in range(RUNS):
        loop = new_loop()
        try:
            started = time.process_time()
            loop.run_until_complete(run())
            best = min(best, (time.process_time() - started) / CALLS * 1e6)
        finally:
            loop.close()
    return best


def asgi_request(app: Any) -> Callable[[], Awaitable[None]]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": CALL_BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def make() -> Awaitable[None]:
        return app(dict(SCOPE), receive, send)  # type: ignore[no-any-return]

    return make


async def run_inline(
    call: DeviceCall, timeout: float | None, args: Any = (), kwargs: Any = None
) -> Any:
    return call.func(*args, **(kwargs or {}))


def echo(value: Any) -> Any:
    return value


class MinimalCrossing:
    """A queue to one thread and a future per call, the loop woken once per batch."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="bench-minimal", daemon=True)
        self.thread.start()

    def _wake(self) -> None:
        self.scheduled = False
        while self.finished:
            self.finished.popleft().set_result(None)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            future, loop, func, args = item
            func(*args)
            self.finished.append(future)
            if not self.scheduled:
                self.scheduled = True
                loop.call_soon_threadsafe(self._wake)

    async def call(self, func: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put((future, loop, func, args))
        await future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(5)


def main() -> None:
    lab = labd.LabDaemon()
    lab.register_plugins(devices={"Echo": Echo})
    lab.add_device("echo", "Echo")
    threaded = create_app(lab)
    inline = create_app(lab)
    inline.ctx.bridge.call = run_inline  # type: ignore[method-assign]
    bridge = Bridge()
    worker = CallWorker("bench")
    echo_call = DeviceCall(worker, echo, "echo")
    minimal = MinimalCrossing()
    rows: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("bare ASGI app", asgi_request(bare_app)),
        ("labd app, call inline (measurement only)", asgi_request(inline)),
        ("labd app, call on the device's thread", asgi_request(threaded)),
        ("Bridge.call alone", lambda: bridge.call(echo_call, 30.0, (42,))),
        ("minimal crossing", lambda: minimal.call(echo, 42)),
    ]
    try:
        print("labd call path, in-process (no sockets)")
        probe = new_loop()
        loop_name = type(probe).__module__.split(".")[0]
        probe.close()
        print(
            f"machine: {platform.machine()}  {len(os.sched_getaffinity(0))} CPUs,"
            f" Python {platform.python_version()}; loop {loop_name}"
        )
        print(f"{'case':44} {'1 at a time':>14} {'32 at once':>14}   (CPU us per call)")
        for name, make in rows:
            one = cpu_per_call(make, 1)
            many = cpu_per_call(make, 32)
            print(f"{name:44} {one:14.2f} {many:14.2f}")
    finally:
        minimal.close()
        worker.close()
        bridge.close()
        lab.shutdown()


if __name__ == "__main__":
    main()
