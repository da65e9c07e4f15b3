"""EventRing: bounded history followed by readers with their own cursors."""

from __future__ import annotations

import threading

import pytest

from labd.ring import EventRing, RingEvent


def event(n: int, *, size: int = 4, sequence: int | None = None, run: int = 0) -> RingEvent:
    return RingEvent("e", bytes([n % 256]) * size, sequence=sequence, run=run)


def positions(events: list[RingEvent]) -> list[int]:
    return [e.position for e in events]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventRing(capacity=0)
    with pytest.raises(ValueError):
        EventRing(max_bytes=0)


def test_append_returns_consecutive_positions() -> None:
    ring = EventRing(capacity=8)
    assert [ring.append(event(i)) for i in range(5)] == [0, 1, 2, 3, 4]
    assert ring.head == 5
    assert ring.oldest == 0
    assert len(ring) == 5
    assert positions(ring.snapshot()) == [0, 1, 2, 3, 4]


def test_capacity_bound_evicts_oldest() -> None:
    ring = EventRing(capacity=4, max_bytes=10_000)
    for i in range(10):
        ring.append(event(i))
    assert len(ring) == 4
    assert ring.oldest == 6
    assert ring.head == 10
    assert positions(ring.snapshot()) == [6, 7, 8, 9]
    assert ring.nbytes == 4 * 4


def test_byte_bound_evicts_oldest() -> None:
    ring = EventRing(capacity=100, max_bytes=10)
    for i in range(6):
        ring.append(event(i, size=4))
        assert ring.nbytes <= 10
    assert positions(ring.snapshot()) == [4, 5]
    assert ring.nbytes == 8


def test_event_larger_than_byte_bound_is_still_kept_alone() -> None:
    ring = EventRing(capacity=100, max_bytes=10)
    ring.append(event(0, size=4))
    ring.append(event(1, size=50))
    assert positions(ring.snapshot()) == [1]
    ring.append(event(2, size=4))
    assert positions(ring.snapshot()) == [2]
    assert ring.nbytes == 4


def test_read_from_cursor_with_limit() -> None:
    ring = EventRing(capacity=16)
    for i in range(10):
        ring.append(event(i))
    events, cursor, skipped = ring.read(3, limit=4)
    assert positions(events) == [3, 4, 5, 6]
    assert (cursor, skipped) == (7, 0)
    events, cursor, skipped = ring.read(cursor)
    assert positions(events) == [7, 8, 9]
    assert (cursor, skipped) == (10, 0)
    assert ring.read(cursor) == ([], 10, 0)


def test_reader_that_fell_behind_skips_with_exact_count() -> None:
    ring = EventRing(capacity=4)
    for i in range(10):
        ring.append(event(i))
    events, cursor, skipped = ring.read(0)
    assert skipped == 6
    assert positions(events) == [6, 7, 8, 9]
    assert cursor == 10
    events, cursor, skipped = ring.read(cursor)
    assert (events, cursor, skipped) == ([], 10, 0)


def test_wakers_called_once_per_append_until_removed() -> None:
    ring = EventRing(capacity=4)
    calls: list[int] = []

    def wake() -> None:
        calls.append(ring.head)

    ring.add_waker(wake)
    ring.append(event(0))
    ring.append(event(1))
    assert calls == [1, 2]
    ring.remove_waker(wake)
    ring.append(event(2))
    assert calls == [1, 2]


def test_concurrent_reader_sees_every_event_in_order_or_counts_it_skipped() -> None:
    ring = EventRing(capacity=32)
    total = 20_000
    written = threading.Event()
    seen: list[int] = []
    skipped_total = 0
    errors: list[str] = []

    def reader() -> None:
        nonlocal skipped_total
        cursor = 0
        while True:
            done = written.is_set()
            events, new_cursor, skipped = ring.read(cursor, limit=64)
            skipped_total += skipped
            expected = cursor + skipped
            for e in events:
                if e.position != expected or e.frame != bytes([expected % 256]) * 4:
                    errors.append(f"expected position {expected}, got {e.position}")
                    return
                seen.append(e.position)
                expected += 1
            cursor = new_cursor
            if done and cursor == ring.head:
                return

    thread = threading.Thread(target=reader, name="test-ring-reader")
    thread.start()
    for i in range(total):
        ring.append(event(i))
    written.set()
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert len(seen) + skipped_total == total
    assert seen == sorted(set(seen))


def data_ring(capacity: int = 100) -> EventRing:
    return EventRing(capacity=capacity)


def append_run(ring: EventRing, run: int, sequences: range, *, end: bool = False) -> None:
    for seq in sequences:
        ring.append(event(seq, sequence=seq, run=run))
    if end:
        ring.append(RingEvent("stream_end", b"end", run=run))


def test_find_after_sequence_resumes_right_after_a_held_id() -> None:
    ring = data_ring()
    append_run(ring, 1, range(10))
    pos = ring.find_after_sequence(5, run=1)
    assert pos == 6
    assert ring.read(pos)[0][0].sequence == 6
    assert ring.find_after_sequence(9, run=1) == ring.head


def test_find_after_sequence_skips_events_without_sequence() -> None:
    ring = data_ring()
    append_run(ring, 1, range(5), end=True)
    pos = ring.find_after_sequence(2, run=1)
    assert [e.sequence for e in ring.read(pos)[0]] == [3, 4, None]


def test_find_after_sequence_older_than_held_goes_to_first_of_run() -> None:
    ring = data_ring(capacity=6)
    append_run(ring, 1, range(3), end=True)
    append_run(ring, 2, range(10))
    # Held: run 2, sequences 4..9.
    pos = ring.find_after_sequence(1, run=2)
    assert pos == ring.oldest
    assert ring.read(pos)[0][0].sequence == 4


def test_find_after_sequence_first_of_run_when_older_run_still_held() -> None:
    ring = data_ring(capacity=100)
    append_run(ring, 1, range(5), end=True)
    append_run(ring, 2, range(5))
    pos = ring.find_after_sequence(-1, run=2)
    first = ring.read(pos)[0][0]
    assert (first.run, first.sequence) == (2, 0)


def test_find_after_sequence_not_reached_resumes_at_oldest() -> None:
    ring = data_ring()
    append_run(ring, 1, range(10), end=True)
    append_run(ring, 2, range(3))
    # The client saw sequence 7 of the earlier run; run 2 has not reached 7.
    assert ring.find_after_sequence(7, run=2) == ring.oldest
    assert ring.find_after_sequence(50, run=1) == ring.oldest


def test_find_after_sequence_on_empty_ring_or_unknown_run() -> None:
    ring = data_ring()
    assert ring.find_after_sequence(3, run=1) == 0
    append_run(ring, 1, range(3))
    assert ring.find_after_sequence(0, run=5) == ring.oldest
