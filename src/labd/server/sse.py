"""Server-sent events: following a history ring with one client's own cursor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from labd.ring import EventRing, RingEvent
from labd.server.bridge import Bridge
from labd.wire import sse_comment

__all__ = ["SSEResponse", "follow_ring"]

log = logging.getLogger(__name__)

_BATCH = 512
_POLL = 1.0  # how often an idle client checks for shutdown or disconnect
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEResponse(Response):
    """Sends an async stream of SSE chunks until it ends or the client leaves.

    Cleanup (``on_close``) always runs, on disconnect too, so no reader is left behind.
    """

    def __init__(
        self,
        chunks: Callable[[asyncio.Event], AsyncIterator[bytes]],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self._chunks = chunks
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        iterator = self._chunks(gone)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            async for chunk in iterator:
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-send
        finally:
            watcher.cancel()
            await iterator.aclose()  # type: ignore[attr-defined]
            if self._on_close is not None:
                await self._on_close()


async def follow_ring(
    bridge: Bridge,
    ring: EventRing,
    cursor: int,
    *,
    gone: asyncio.Event,
    closing: Callable[[], bool],
    heartbeat: float,
    on_batch: Callable[[list[RingEvent], int], None] | None = None,
    finished: Callable[[int], bool] | None = None,
    first: bytes = b"retry: 2000\n\n",
) -> AsyncIterator[bytes]:
    """Yield the ring's frames from ``cursor`` on, in batches, with heartbeats when idle.

    A reader that falls behind the ring loses its oldest events (``on_batch`` learns how
    many); the writer never waits for it. ``finished(cursor)`` ends a finite stream.
    """
    watcher = bridge.watch(ring)
    loop = asyncio.get_running_loop()
    try:
        if first:
            yield first
        last_sent = loop.time()
        while not closing() and not gone.is_set():
            events, cursor, skipped = ring.read(cursor, _BATCH)
            if events or skipped:
                if on_batch is not None:
                    on_batch(events, skipped)
                if events:
                    yield b"".join(e.frame for e in events)
                    last_sent = loop.time()
                continue
            if finished is not None and finished(cursor):
                return
            idle_for = loop.time() - last_sent
            if idle_for >= heartbeat:
                yield sse_comment("ping")
                last_sent = loop.time()
                continue
            await watcher.wait(min(_POLL, heartbeat - idle_for))
    finally:
        bridge.unwatch(watcher)
