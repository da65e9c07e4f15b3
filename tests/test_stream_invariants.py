"""Stream invariants under random interleavings (hypothesis).

For any sequence of emits, subscriptions (inline, queued behind a slow callback, remote
ring readers), partial reads and closes, every subscriber sees the data in order with no
duplicate, and whatever it did not see is counted: ``delivered + dropped`` equals the
number emitted while it was subscribed, and a remote reader's events plus its skipped
positions cover every position since it joined.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from labd import LabDaemon  # noqa: E402

TIMEOUT = 20.0


class Feed:
    """A driver whose vendor SDK calls back from its own thread, one datum per frame."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._callback: Any = None
        self.frames = 0

    def start_streaming(self, callback: Any) -> None:
        if self.is_streaming():
            return
        self._callback = callback

    def stop_streaming(self) -> None:
        self._callback = None

    def is_streaming(self) -> bool:
        return self._callback is not None

    def _frames(self, count: int) -> None:
        """What the SDK thread does: number each frame and hand it over."""
        for _ in range(count):
            callback = self._callback
            if callback is not None:
                callback(self.frames)
                self.frames += 1


@dataclass
class Watcher:
    kind: str
    since: int  # frames emitted before it joined
    seen: list[int] = field(default_factory=list)
    gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    handle: Any = None
    cursor: int = 0
    joined_at: int = 0  # ring position when it joined (remote)
    skipped: int = 0
    events_read: int = 0
    closed: bool = False

    def callback(self, datum: int) -> None:
        if self.kind == "queued":  # a slow callback: one datum per permit
            assert self.gate.acquire(timeout=TIMEOUT)
        self.seen.append(datum)

    def read(self, count: int) -> None:
        if self.kind == "queued":
            for _ in range(count):
                self.gate.release()
        elif self.kind == "remote":
            events, self.cursor, skipped = self.handle.ring.read(self.cursor, count)
            self.skipped += skipped
            self.events_read += len(events)
            self.seen.extend(e.sequence for e in events if e.kind == "device_data")


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.integers(1, 40)),
        st.tuples(
            st.just("join"), st.sampled_from(["inline", "queued", "remote"]), st.integers(1, 4)
        ),
        st.tuples(st.just("read"), st.integers(0, 7), st.integers(1, 12)),
        st.tuples(st.just("close"), st.integers(0, 7)),
    ),
    max_size=40,
)


def _finish(watcher: Watcher, feed: Feed) -> None:
    """Close ``watcher`` and check what it saw against what was emitted meanwhile."""
    watcher.closed = True
    if watcher.kind == "remote":
        ring = watcher.handle.ring
        while watcher.cursor < ring.head:
            watcher.read(1000)
        positions = ring.head - watcher.joined_at
        watcher.handle.close()
        seen = watcher.seen
        assert watcher.events_read + watcher.skipped == positions
        assert all(b > a for a, b in pairwise(seen)), seen
        gaps = sum(b - a - 1 for a, b in pairwise(seen))
        assert gaps <= watcher.skipped
        return
    emitted = feed.frames - watcher.since
    watcher.gate.release(10_000)  # let a slow callback finish what it holds
    sub = watcher.handle
    sub.close(timeout=TIMEOUT)
    seen = watcher.seen
    assert sub.delivered == len(seen)
    assert sub.delivered + sub.dropped == emitted, (sub.delivered, sub.dropped, emitted)
    assert all(b > a for a, b in pairwise(seen)), seen
    assert all(value >= watcher.since for value in seen)
    if watcher.kind == "inline":
        assert sub.dropped == 0 and seen == list(range(watcher.since, feed.frames))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(OPERATIONS)
def test_every_subscriber_sees_order_and_counts_every_loss(operations: list[Any]) -> None:
    daemon = LabDaemon(stream_buffer_events=8)
    try:
        daemon.register_plugins(devices={"Feed": Feed})
        feed = daemon.add_device("feed", "Feed")
        anchor = Watcher("inline", 0)  # keeps the stream running throughout
        anchor.handle = daemon.start_streaming("feed", anchor.callback)
        watchers: list[Watcher] = []
        for op in operations:
            if op[0] == "emit":
                feed._frames(op[1])
            elif op[0] == "join":
                watcher = Watcher(op[1], feed.frames)
                if op[1] == "remote":
                    watcher.handle = daemon.open_remote_reader("feed")
                    watcher.cursor = watcher.joined_at = watcher.handle.cursor
                else:
                    queue = {"queue_size": op[2]} if op[1] == "queued" else {}
                    watcher.handle = daemon.start_streaming("feed", watcher.callback, **queue)
                watchers.append(watcher)
            elif op[0] == "read":
                open_ones = [w for w in watchers if not w.closed]
                if open_ones:
                    open_ones[op[1] % len(open_ones)].read(op[2])
            else:
                open_ones = [w for w in watchers if not w.closed]
                if open_ones:
                    _finish(open_ones[op[1] % len(open_ones)], feed)
        for watcher in watchers:
            if not watcher.closed:
                _finish(watcher, feed)
        _finish(anchor, feed)
    finally:
        daemon.shutdown(timeout=TIMEOUT)
