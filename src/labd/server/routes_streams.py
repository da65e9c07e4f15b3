"""SSE endpoints: a device's stream, a task's progress, the daemon's state changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labd.ring import RingEvent
from labd.server.context import ServerContext
from labd.server.errors import ApiError, documented_errors, status_for
from labd.server.sse import SSEResponse, follow_ring

__all__ = ["stream_routes"]

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
    **documented_errors(400, 401, 403, 404, 429),
}


def stream_routes(ctx: ServerContext) -> APIRouter:
    router = APIRouter(tags=["streams"])
    daemon = ctx.daemon

    def counted(request: Request) -> tuple[str, Callable[[], Awaitable[None]]]:
        """Count the stream against its client (429 past the limit); the release to await."""
        client = ctx.open_stream(request)

        async def release() -> None:
            ctx.stream_limits.release(client)

        return client, release

    @router.get("/stream/devices/{device_id}", responses=_SSE_DOC, response_class=Response)
    async def device_stream(request: Request, device_id: str) -> Response:
        ctx.check_stream(device_id)
        client, release = counted(request)
        try:
            return await _device_stream(request, device_id, release)
        except BaseException:
            ctx.stream_limits.release(client)
            raise

    async def _device_stream(
        request: Request, device_id: str, release: Callable[[], Awaitable[None]]
    ) -> Response:
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        last_sequence = None
        if last_id is not None and last_id.strip().lstrip("-").isdigit():
            last_sequence = int(last_id)
        reader = daemon.open_remote_reader(device_id, last_sequence)
        ring = reader.ring
        if reader.needs_start and daemon.owner_of(device_id) is None:
            try:
                start = daemon.prepare_stream_start(device_id, explicit=False)
                await ctx.bridge.call(start, ctx.call_timeout)
            except Exception as exc:
                await ctx.bridge.run(reader.close)
                status = status_for(exc) or 409
                raise ApiError(
                    status,
                    f"device {device_id!r} could not start streaming: {exc}",
                    type_name=type(exc).__name__,
                    origin="framework" if status_for(exc) else "device",
                    context={"device_id": device_id},
                ) from None
        gauge = ctx.metrics.sse_clients.labels(device_id)
        delivered = ctx.metrics.events_delivered.labels(device_id)
        dropped = ctx.metrics.events_dropped.labels(device_id)
        gauge.inc()

        def count(events: list[RingEvent], skipped: int) -> None:
            if events:
                delivered.inc(len(events))
            if skipped:
                dropped.inc(skipped)

        def chunks(gone: asyncio.Event) -> AsyncIterator[bytes]:
            return follow_ring(
                ctx.bridge,
                ring,
                reader.cursor,
                gone=gone,
                closing=ctx.is_closing,
                heartbeat=ctx.heartbeat_interval,
                on_batch=count,
            )

        async def leave() -> None:
            gauge.dec()
            await release()
            await ctx.bridge.run(reader.close)

        return SSEResponse(chunks, leave)

    @router.get("/stream/tasks/{task_id}", responses=_SSE_DOC, response_class=Response)
    async def task_stream(request: Request, task_id: str) -> Response:
        handle = ctx.task(task_id)
        ring = handle.events
        _, release = counted(request)

        def done(cursor: int) -> bool:
            return not handle.is_running() and cursor >= ring.head

        def chunks(gone: asyncio.Event) -> AsyncIterator[bytes]:
            return follow_ring(
                ctx.bridge,
                ring,
                ring.oldest,
                gone=gone,
                closing=ctx.is_closing,
                heartbeat=ctx.heartbeat_interval,
                finished=done,
            )

        return SSEResponse(chunks, release)

    @router.get("/stream/events", responses=_SSE_DOC, response_class=Response)
    async def event_stream(request: Request) -> Response:
        ring = daemon.event_history
        cursor = ring.head
        _, release = counted(request)

        def chunks(gone: asyncio.Event) -> AsyncIterator[bytes]:
            return follow_ring(
                ctx.bridge,
                ring,
                cursor,
                gone=gone,
                closing=ctx.is_closing,
                heartbeat=ctx.heartbeat_interval,
            )

        return SSEResponse(chunks, release)

    return router
