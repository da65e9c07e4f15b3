"""A bounded history of encoded events that many readers follow at their own pace.

One writer appends; any number of readers, on any thread, keep their own cursor (a
position) and read without locks. The ring never waits for a reader: a reader that
falls more than the ring's capacity behind finds its events gone and skips ahead, and
the skip is reported so the gap can be shown. The writer's cost per event is O(1)
whatever the number of readers; readers are woken through a few "wakers" (one per
event loop, not one per reader).

Used for device streams (by the hub), the global state-change events and per-task
progress, so that the server, and later a message bus, consume them the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EventRing", "RingEvent"]


class RingEvent:
    """One event in a ring: its wire frame (bytes) plus what readers may need to filter it."""

    __slots__ = ("frame", "kind", "position", "run", "sequence", "size", "timestamp")

    def __init__(
        self,
        kind: str,
        frame: bytes,
        *,
        sequence: int | None = None,
        run: int = 0,
        timestamp: float = 0.0,
    ) -> None:
        self.kind = kind
        self.frame = frame
        self.sequence = sequence
        self.run = run
        self.timestamp = timestamp
        self.size = len(frame)
        self.position = -1


class EventRing:
    """Fixed-capacity history addressed by position, bounded by count and by bytes."""

    def __init__(self, capacity: int = 4096, max_bytes: int = 64 * 1024 * 1024) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._slots: list[RingEvent | None] = [None] * capacity
        self._head = 0  # position the next event gets
        self._oldest = 0  # oldest position still readable
        self._bytes = 0
        self._write_lock = threading.Lock()
        self._wakers: tuple[Callable[[], None], ...] = ()

    @property
    def head(self) -> int:
        """Position of the next event to be appended (= one past the newest)."""
        return self._head

    @property
    def oldest(self) -> int:
        """Oldest position still held."""
        return self._oldest

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._head - self._oldest

    def append(self, event: RingEvent) -> int:
        """Add an event, evicting the oldest past either bound; returns its position."""
        slots = self._slots
        capacity = self.capacity
        with self._write_lock:
            pos = self._head
            event.position = pos
            if pos - self._oldest >= capacity:
                self._evict_one()
            self._bytes += event.size
            while self._bytes > self.max_bytes and self._oldest < pos:
                self._evict_one()
            slots[pos % capacity] = event
            self._head = pos + 1
        for wake in self._wakers:
            wake()
        return pos

    def _evict_one(self) -> None:
        old = self._slots[self._oldest % self.capacity]
        if old is not None and old.position == self._oldest:
            self._bytes -= old.size
        self._oldest += 1

    def read(self, cursor: int, limit: int = 256) -> tuple[list[RingEvent], int, int]:
        """Events from ``cursor`` on, at most ``limit``.

        Returns ``(events, next_cursor, skipped)``; ``skipped`` counts positions the
        reader lost because the ring moved past them.
        """
        skipped = 0
        oldest = self._oldest
        if cursor < oldest:
            skipped = oldest - cursor
            cursor = oldest
        head = self._head
        end = min(head, cursor + limit)
        out: list[RingEvent] = []
        slots = self._slots
        capacity = self.capacity
        while cursor < end:
            event = slots[cursor % capacity]
            if event is None or event.position != cursor:
                # Overwritten while we read: jump to what is still there.
                oldest = self._oldest
                if oldest > cursor:
                    skipped += oldest - cursor
                    cursor = oldest
                    end = min(self._head, cursor + limit)
                    continue
                break
            out.append(event)
            cursor += 1
        return out, cursor, skipped

    def find_after_sequence(self, sequence: int, run: int) -> int:
        """Where a reader that last saw ``sequence`` of ``run`` should resume.

        Right after that event when it is still held; at the first held event of the run
        when it is older than anything held; at the oldest held event when the run never
        reached it (the stream restarted since) -- the SSE ``Last-Event-ID`` rules.
        """
        newest_seq: int | None = None
        first_of_run = self._oldest
        for pos in range(self._head - 1, self._oldest - 1, -1):
            event = self._slots[pos % self.capacity]
            if event is None or event.position != pos or event.run != run:
                break
            first_of_run = pos
            if event.sequence is None:
                continue
            if newest_seq is None:
                newest_seq = event.sequence
                if sequence > newest_seq:
                    return self._oldest
            if event.sequence <= sequence:
                return pos + 1
        if newest_seq is None:
            return self._oldest
        return first_of_run

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` on the writer's thread after each append; it must be cheap."""
        with self._write_lock:
            self._wakers = (*self._wakers, wake)

    def remove_waker(self, wake: Callable[[], None]) -> None:
        with self._write_lock:
            self._wakers = tuple(w for w in self._wakers if w is not wake)

    def snapshot(self) -> list[Any]:
        """Every event still held, oldest first (for tests and diagnostics)."""
        return self.read(self._oldest, self.capacity)[0]
