"""SSE pieces as pure functions: framing, query redaction, and ``follow_ring`` on its own loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("fastapi")

from labd.ring import EventRing, RingEvent
from labd.server.auth import redact_query
from labd.server.bridge import Bridge
from labd.server.sse import follow_ring
from labd.wire import encode_stream_envelope, sse_comment, sse_frame


def test_sse_frame_layout() -> None:
    assert sse_frame("device_data", b'{"a":1}', 42) == (
        b'id: 42\nevent: device_data\ndata: {"a":1}\n\n'
    )
    assert sse_frame("stream_end", b"{}") == b"event: stream_end\ndata: {}\n\n"
    assert sse_comment() == b": ping\n\n"


def test_envelope_is_one_json_line() -> None:
    body = encode_stream_envelope("daq1", 7, 1_800_000_000.25, {"v": [1, 2]}, run=3)
    assert b"\n" not in body
    assert json.loads(body) == {
        "event": "device_data",
        "device_id": "daq1",
        "timestamp": "2027-01-15T08:00:00.250000Z",
        "sequence": 7,
        "run": 3,
        "payload": {"v": [1, 2]},
    }


def test_envelope_survives_an_unencodable_payload() -> None:
    body = json.loads(encode_stream_envelope("d", 0, 0.0, object(), run=1))
    assert body["payload"] is None and "object" in body["encoding_error"]


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("token=abc", "token=***"),
        ("a=1&token=abc&b=2", "a=1&token=***&b=2"),
        ("mytoken=abc", "mytoken=abc"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_redact_query(query: str, shown: str) -> None:
    assert redact_query(query) == shown


def _data_ring(capacity: int = 16) -> EventRing:
    return EventRing(capacity=capacity)


def _append(ring: EventRing, seq: int) -> None:
    frame = sse_frame("device_data", b'{"sequence":%d}' % seq, seq)
    ring.append(RingEvent("device_data", frame, sequence=seq, run=1))


async def _collect(gen: AsyncIterator[bytes], count: int, timeout: float = 10.0) -> list[bytes]:
    out: list[bytes] = []

    async def take() -> None:
        async for chunk in gen:
            out.append(chunk)
            if len(out) >= count:
                return

    await asyncio.wait_for(take(), timeout)
    return out


def test_follow_ring_sends_retry_then_batches_then_heartbeats() -> None:
    async def main() -> list[bytes]:
        bridge = Bridge(max_workers=1)
        ring = _data_ring()
        for seq in range(3):
            _append(ring, seq)
        gen = follow_ring(
            bridge, ring, 0, gone=asyncio.Event(), closing=lambda: False, heartbeat=0.05
        )
        try:
            return await _collect(gen, 3)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            bridge.close(timeout=5.0)

    retry, batch, ping = asyncio.run(main())
    assert retry == b"retry: 2000\n\n"
    assert batch.count(b"event: device_data") == 3  # one chunk for what was waiting
    assert batch.startswith(b"id: 0\n")
    assert ping == b": ping\n\n"


def test_follow_ring_reports_what_a_slow_reader_lost() -> None:
    batches: list[tuple[list[int | None], int]] = []

    async def main() -> list[bytes]:
        bridge = Bridge(max_workers=1)
        ring = _data_ring(capacity=4)
        for seq in range(10):
            _append(ring, seq)
        gen = follow_ring(
            bridge,
            ring,
            0,
            gone=asyncio.Event(),
            closing=lambda: False,
            heartbeat=30.0,
            on_batch=lambda events, skipped: batches.append(
                ([e.sequence for e in events], skipped)
            ),
        )
        try:
            return await _collect(gen, 2)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            bridge.close(timeout=5.0)

    chunks = asyncio.run(main())
    assert batches == [([6, 7, 8, 9], 6)]
    assert chunks[1].startswith(b"id: 6\n")


def test_follow_ring_wakes_on_append_from_another_thread() -> None:
    async def main() -> list[bytes]:
        bridge = Bridge(max_workers=1)
        ring = _data_ring()
        gen = follow_ring(
            bridge, ring, 0, gone=asyncio.Event(), closing=lambda: False, heartbeat=30.0
        )
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: loop.run_in_executor(None, _append, ring, 0))
        try:
            return await _collect(gen, 2, timeout=5.0)  # far below the 30 s heartbeat
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            bridge.close(timeout=5.0)

    chunks = asyncio.run(main())
    assert chunks[1].startswith(b"id: 0\n")


def test_follow_ring_ends_when_finished_or_closing() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        bridge = Bridge(max_workers=1)
        ring = _data_ring()
        _append(ring, 0)
        finite = [
            c
            async for c in follow_ring(
                bridge,
                ring,
                0,
                gone=asyncio.Event(),
                closing=lambda: False,
                heartbeat=30.0,
                finished=lambda cursor: cursor >= ring.head,
            )
        ]
        closing = [
            c
            async for c in follow_ring(
                bridge, ring, 0, gone=asyncio.Event(), closing=lambda: True, heartbeat=30.0
            )
        ]
        bridge.close(timeout=5.0)
        return finite, closing

    finite, closing = asyncio.run(asyncio.wait_for(main(), 10.0))
    assert len(finite) == 2 and finite[1].startswith(b"id: 0\n")
    assert closing == [b"retry: 2000\n\n"]
