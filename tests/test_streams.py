"""The stream hub: one device stream, many subscribers, numbering, history ring, ends and
errors, and the seed's hand-written streaming devices under labd (SPEC sections 1 and 3)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import labd as ld
from helpers import wait_until


class Manual:
    """A streaming device whose own thread emits exactly what the test hands it."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.starts = 0
        self.stops = 0
        self.kwargs_seen: list[dict[str, Any]] = []
        self.callback: Any = None
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.thread_ident: int | None = None

    def start_streaming(self, callback: Any, **kwargs: Any) -> None:
        self.starts += 1
        self.kwargs_seen.append(kwargs)
        self.callback = callback
        self._thread = threading.Thread(target=self._loop, name="dev-manual", daemon=True)
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self.stops += 1
        self._inbox.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def read(self) -> int:
        return 7

    def _loop(self) -> None:
        self.thread_ident = threading.get_ident()
        while True:
            try:
                job = self._inbox.get(timeout=30)
            except queue.Empty:  # idle for long: a test left it running; end quietly
                return
            if job is None:
                return
            job()

    def _run(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on the device's thread and wait for it."""
        done = threading.Event()
        errors: list[BaseException] = []

        def wrapped() -> None:
            try:
                job()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        self._inbox.put(wrapped)
        assert done.wait(10), "device thread did not run the job"
        if errors:
            raise errors[0]

    def _push(self, *data: Any) -> None:
        callback = self.callback

        def emit() -> None:
            for datum in data:
                callback(datum)

        self._run(emit)

    def _quit(self) -> None:
        """The device's loop ends by itself (is_streaming turns False)."""
        self._inbox.put(None)
        assert self._thread is not None
        self._thread.join(10)


class Collector:
    def __init__(self) -> None:
        self.data: list[Any] = []
        self.ended = threading.Event()
        self.end_error: BaseException | None = None

    def __call__(self, datum: Any) -> None:
        self.data.append(datum)

    def on_end(self, error: BaseException | None) -> None:
        self.end_error = error
        self.ended.set()


def ring_frames(daemon: ld.LabDaemon, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    ring = daemon.streams.get(device_id).ring
    assert ring is not None
    out = []
    for event in ring.snapshot():
        text = event.frame.decode()
        assert text.endswith("\n\n")
        (data,) = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        out.append((event.kind, json.loads(data)))
    return out


@pytest.fixture
def manual(daemon: ld.LabDaemon) -> Any:
    return daemon.add_device("m", Manual)


# -- one stream, many subscribers --------------------------------------------------------------


def test_one_device_start_for_many_subscribers(daemon: ld.LabDaemon, manual: Any) -> None:
    a, b, c = Collector(), Collector(), Collector()
    sub_a = daemon.start_streaming("m", a)
    sub_b = daemon.start_streaming(manual, b)
    sub_c = manual.start_streaming(c)
    assert isinstance(sub_c, ld.Subscription)
    assert manual.starts == 1
    manual._push(1, 2, 3)
    assert a.data == b.data == c.data == [1, 2, 3]
    assert sub_a.delivered == sub_b.delivered == sub_c.delivered == 3
    assert sub_a.dropped == 0
    assert manual.is_streaming() is True
    assert daemon.device_info("m")["streaming"] is True


def test_later_subscribers_kwargs_are_ignored_with_a_warning(
    daemon: ld.LabDaemon, manual: Any, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.start_streaming("m", Collector(), rate=10)
    with caplog.at_level(logging.WARNING, logger="labd"):
        daemon.start_streaming("m", Collector(), rate=10)
        daemon.start_streaming("m", Collector())
        assert caplog.records == []
        daemon.start_streaming("m", Collector(), rate=20)
    assert manual.kwargs_seen == [{"rate": 10}]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "'m'" in record.getMessage() and "20" in record.getMessage()


def test_labd_kwargs_are_not_passed_to_the_device(daemon: ld.LabDaemon, manual: Any) -> None:
    daemon.start_streaming("m", Collector(), queue_size=5, on_end=lambda e: None, rate=3)
    assert manual.kwargs_seen == [{"rate": 3}]


def test_sequence_numbers_restart_at_zero_and_run_increments(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    daemon.streams.enable_history()
    daemon.start_streaming("m", Collector())
    manual._push("a", "b", "c")
    daemon.stop_streaming("m")
    daemon.start_streaming("m", Collector())
    manual._push("d", "e")
    data = [body for kind, body in ring_frames(daemon, "m") if kind == "device_data"]
    assert [(d["run"], d["sequence"], d["payload"]) for d in data] == [
        (1, 0, "a"),
        (1, 1, "b"),
        (1, 2, "c"),
        (2, 0, "d"),
        (2, 1, "e"),
    ]
    for d in data:
        assert d["event"] == "device_data" and d["device_id"] == "m"
        assert d["timestamp"].endswith("Z") and len(d["timestamp"]) == 27


def test_sequences_are_unique_and_consecutive_across_emitting_threads(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    daemon.streams.enable_history()
    seen: list[int] = []
    lock = threading.Lock()

    def count(datum: int) -> None:
        with lock:
            seen.append(datum)

    daemon.start_streaming("m", count)
    emit = manual.callback
    threads = [
        threading.Thread(target=lambda: [emit(i) for i in range(500)], name=f"dev-emit-{k}")
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 2000
    sequences = [body["sequence"] for kind, body in ring_frames(daemon, "m")]
    assert sorted(sequences) == list(range(2000))


def test_history_ring_one_frame_per_datum_and_stream_end(daemon: ld.LabDaemon, manual: Any) -> None:
    assert daemon.streams.get("m").ring is None  # history is off by default
    daemon.streams.enable_history()
    ring = daemon.streams.get("m").ring
    assert ring is not None
    daemon.start_streaming("m", Collector())
    manual._push({"x": 1}, [1, 2], 3.5)
    assert [e.kind for e in ring.snapshot()] == ["device_data"] * 3
    assert ring.snapshot()[0].frame.startswith(b"id: 0\nevent: device_data\ndata: ")
    daemon.stop_streaming("m")
    frames = ring_frames(daemon, "m")
    assert [kind for kind, _ in frames] == ["device_data"] * 3 + ["stream_end"]
    assert frames[-1][1]["device_id"] == "m"
    assert [body["payload"] for _, body in frames[:3]] == [{"x": 1}, [1, 2], 3.5]
    other = daemon.add_device("later", Manual)
    assert other is not None and daemon.streams.get("later").ring is not None


def test_stream_end_is_the_last_event_of_its_run_even_mid_datum(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    """A datum being appended while the stream stops still lands before stream_end."""
    daemon.streams.enable_history()
    ring = daemon.streams.get("m").ring
    assert ring is not None
    daemon.start_streaming("m", Collector())
    inside, release = threading.Event(), threading.Event()
    real_append = ring.append

    def held_append(event: Any) -> int:
        if event.kind == "device_data":
            inside.set()
            assert release.wait(10)
        return real_append(event)

    ring.append = held_append  # type: ignore[method-assign]
    emitter = threading.Thread(target=manual.callback, args=("late",), name="test-emitter")
    emitter.start()
    assert inside.wait(10)  # the emitter is inside the hub, appending its datum
    stopper = threading.Thread(target=daemon.stop_streaming, args=("m", 5.0), name="test-stop")
    stopper.start()
    # The stop must not put stream_end ahead of the datum being appended.
    assert not wait_until(lambda: ring.head > 0, timeout=0.5)
    release.set()
    emitter.join(10)
    stopper.join(10)
    ring.append = real_append  # type: ignore[method-assign]
    assert [e.kind for e in ring.snapshot()] == ["device_data", "stream_end"]


# -- callbacks ------------------------------------------------------------------------------------


def test_callbacks_run_outside_the_device_lock(daemon: ld.LabDaemon, manual: Any) -> None:
    owned: list[bool] = []
    threads: list[int] = []
    reads: list[Any] = []

    def check(datum: Any) -> None:  # the hub catches what a callback raises: only record
        owned.append(manual._ld_lock._is_owned())
        threads.append(threading.get_ident())
        reads.append(manual.read())  # a public method from inside the callback

    daemon.start_streaming("m", check)
    manual._push(1, 2)
    assert owned == [False, False]
    assert threads == [manual.thread_ident] * 2
    assert reads == [7, 7]
    assert daemon.get_last_error("m") is None


def test_start_from_a_thread_holding_the_lock_runs_synchronous_callbacks_unlocked(
    daemon: ld.LabDaemon,
) -> None:
    class EmitsOnStart:
        def start_streaming(self, callback: Any) -> None:
            self.held = self._ld_lock._is_owned()  # type: ignore[attr-defined]
            callback("first")

        def stop_streaming(self) -> None:
            pass

    dev = daemon.add_device("e", EmitsOnStart)
    owned: list[bool] = []
    with dev._ld_lock:
        daemon.start_streaming("e", lambda d: owned.append(dev._ld_lock._is_owned()))
        assert dev._ld_lock._is_owned()  # the hub gave the lock back
    assert dev.held is False
    assert owned == [False]


def test_raising_subscriber_is_recorded_and_isolated(daemon: ld.LabDaemon, manual: Any) -> None:
    good = Collector()

    def bad(datum: Any) -> None:
        raise ValueError(f"cannot handle {datum}")

    daemon.start_streaming("m", bad)
    daemon.start_streaming("m", good)
    manual._push(1, 2, 3)  # raises on the device thread if the error reached it
    assert good.data == [1, 2, 3]
    assert manual.is_streaming()
    error = daemon.get_last_error("m")
    assert error is not None
    assert (error["type"], error["origin"], error["message"]) == (
        "ValueError",
        "callback",
        "cannot handle 3",
    )


def test_queued_subscription_runs_on_its_own_thread_and_counts_drops(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    release = threading.Event()
    names: list[str] = []
    got: list[int] = []

    def slow(datum: int) -> None:
        names.append(threading.current_thread().name)
        release.wait(10)
        got.append(datum)

    sub = daemon.start_streaming("m", slow, queue_size=4)
    emitted = 50
    manual._push(*range(emitted))  # returns although the callback is blocked
    assert sub.dropped == emitted - 4
    release.set()
    assert wait_until(lambda: sub.delivered + sub.dropped == emitted)
    assert sub.delivered == 4
    assert got == [0, 1, 2, 3]
    assert names and all(n.startswith("labd-") for n in names)


def test_queued_subscriber_error_is_recorded(daemon: ld.LabDaemon, manual: Any) -> None:
    def bad(datum: Any) -> None:
        raise RuntimeError("queued failure")

    sub = daemon.start_streaming("m", bad, queue_size=10)
    manual._push(1)
    assert wait_until(lambda: daemon.get_last_error("m") is not None)
    error = daemon.get_last_error("m")
    assert error is not None and error["origin"] == "callback"
    assert sub.delivered == 1


def test_subscription_close_leaves_the_stream_running(daemon: ld.LabDaemon, manual: Any) -> None:
    a, b = Collector(), Collector()
    sub_a = daemon.start_streaming("m", a, on_end=a.on_end)
    daemon.start_streaming("m", b)
    manual._push(1)
    sub_a.close()
    sub_a.close()  # idempotent
    assert not sub_a.active
    manual._push(2)
    assert a.data == [1] and b.data == [1, 2]
    assert not a.ended.is_set()  # closing is not an end of the stream
    assert manual.stops == 0 and manual.is_streaming()


def test_closing_the_last_subscriber_keeps_an_explicit_stream(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    sub = daemon.start_streaming("m", Collector())
    sub.close()
    assert manual.is_streaming() and manual.stops == 0
    daemon.stop_streaming("m")
    assert manual.stops == 1


# -- stopping and ending --------------------------------------------------------------------------


def test_stop_tells_every_subscriber_and_second_stop_is_a_no_op(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    a, b = Collector(), Collector()
    sub_a = daemon.start_streaming("m", a, on_end=a.on_end)
    sub_b = daemon.start_streaming("m", b, on_end=b.on_end, queue_size=3)
    manual.stop_streaming()
    assert a.ended.is_set() and b.ended.is_set()
    assert a.end_error is None
    assert not sub_a.active and not sub_b.active
    assert manual.stops == 1
    assert manual.is_streaming() is False
    manual.stop_streaming()
    daemon.stop_streaming("m")
    assert manual.stops == 1


def test_stop_when_never_started_is_a_no_op(daemon: ld.LabDaemon, manual: Any) -> None:
    daemon.stop_streaming("m")
    manual.stop_streaming()
    assert manual.stops == 0


def test_stream_restarts_after_stop(daemon: ld.LabDaemon, manual: Any) -> None:
    first = Collector()
    daemon.start_streaming("m", first)
    old_callback = manual.callback
    manual._push(1)
    daemon.stop_streaming("m")
    second = Collector()
    daemon.start_streaming("m", second)
    assert manual.starts == 2
    manual._run(lambda: old_callback("stale"))  # the previous run's callback is dead
    manual._push(2)
    assert first.data == [1] and second.data == [2]


@pytest.mark.parametrize("via", ["device", "daemon"])
def test_stop_from_inside_a_callback_returns_at_once(
    daemon: ld.LabDaemon, manual: Any, via: str
) -> None:
    returned = threading.Event()
    col = Collector()

    def stopper(datum: Any) -> None:
        col(datum)
        if via == "device":
            manual.stop_streaming(timeout=10)
        else:
            daemon.stop_streaming("m", timeout=10)
        returned.set()

    daemon.start_streaming("m", stopper, on_end=col.on_end)
    manual._push(1)  # _push waits for the device thread, so the stop call returned
    assert returned.is_set()
    assert col.ended.wait(10)
    assert wait_until(lambda: manual.stops == 1 and not manual.is_streaming())
    assert daemon.device_info("m")["streaming"] is False


def test_stream_that_ends_by_itself_ends_for_subscribers(daemon: ld.LabDaemon, manual: Any) -> None:
    events: list[dict[str, Any]] = []
    daemon.events.add_listener(events.append)
    col = Collector()
    sub = daemon.start_streaming("m", col, on_end=col.on_end)
    manual._push(1)
    manual._quit()
    t0 = time.monotonic()
    assert col.ended.wait(10)
    assert time.monotonic() - t0 < 5.0
    assert not sub.active
    assert manual.is_streaming() is False
    assert [e["event"] for e in events if e["event"].startswith("streaming_")] == [
        "streaming_started",
        "streaming_stopped",
    ]
    # The stream can be started again.
    daemon.start_streaming("m", Collector())
    assert manual.starts == 2


def test_emitter_error_records_origin_device_and_sends_stream_error(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    daemon.streams.enable_history()
    col = Collector()
    daemon.start_streaming("m", col, on_end=col.on_end)
    emitter = manual.callback
    manual._run(lambda: emitter.error(OSError("sensor unplugged")))
    error = daemon.get_last_error("m")
    assert error is not None
    assert (error["type"], error["origin"], error["message"]) == (
        "OSError",
        "device",
        "sensor unplugged",
    )
    kinds = [kind for kind, _ in ring_frames(daemon, "m")]
    assert kinds == ["stream_error"]
    _, body = ring_frames(daemon, "m")[0]
    assert body["device_id"] == "m" and body["error"]["type"] == "OSError"
    assert not col.ended.is_set()  # an error report does not end the stream


def test_emitter_end_ends_the_stream(daemon: ld.LabDaemon, manual: Any) -> None:
    daemon.streams.enable_history()
    col = Collector()
    daemon.start_streaming("m", col, on_end=col.on_end)
    emitter = manual.callback
    manual._push(1)
    manual._run(emitter.end)
    assert col.ended.is_set()
    assert col.end_error is None
    assert daemon.device_info("m")["streaming"] is False
    assert [kind for kind, _ in ring_frames(daemon, "m")] == ["device_data", "stream_end"]
    manual._push(2)  # after end() the old callback delivers nothing
    assert col.data == [1]
    manual._quit()  # the device said "over" but its loop still runs: end it


def test_device_stop_raising_is_recorded_and_ends_the_stream(daemon: ld.LabDaemon) -> None:
    class BadStop(Manual):
        def stop_streaming(self, timeout: float | None = None) -> None:
            super().stop_streaming(timeout)
            raise RuntimeError("stop failed")

    dev = daemon.add_device("bad", BadStop)
    col = Collector()
    daemon.start_streaming("bad", col, on_end=col.on_end)
    daemon.stop_streaming("bad")
    assert col.ended.is_set()
    assert isinstance(col.end_error, RuntimeError)
    error = daemon.get_last_error("bad")
    assert error is not None and (error["type"], error["origin"]) == ("RuntimeError", "device")
    assert dev.stops == 1


def test_device_start_raising_propagates_and_leaves_the_stream_idle(
    daemon: ld.LabDaemon,
) -> None:
    class NotConnected(Manual):
        def start_streaming(self, callback: Any, **kwargs: Any) -> None:
            if self.starts == 0:
                self.starts += 1
                raise RuntimeError("Device not connected")
            super().start_streaming(callback, **kwargs)

    dev = daemon.add_device("nc", NotConnected)
    with pytest.raises(RuntimeError, match="not connected"):
        daemon.start_streaming("nc", Collector())
    assert daemon.device_info("nc")["streaming"] is False
    error = daemon.get_last_error("nc")
    assert error is not None and error["origin"] == "device"
    col = Collector()
    daemon.start_streaming("nc", col)
    dev._push(5)
    assert col.data == [5]


def test_devices_without_streaming_methods_raise_device_error(daemon: ld.LabDaemon) -> None:
    class Plain:
        def read(self) -> int:
            return 1

    dev = daemon.add_device("plain", Plain)
    with pytest.raises(ld.DeviceError, match="'plain'"):
        daemon.start_streaming("plain", Collector())
    with pytest.raises(ld.DeviceError, match="'plain'"):
        daemon.start_streaming(dev, Collector())
    with pytest.raises(ld.DeviceError, match="'plain'"):
        daemon.stop_streaming("plain")
    assert not hasattr(dev, "start_streaming")


def test_stream_started_for_remote_readers_stops_with_the_last_one(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    stream = daemon.streams.get("m")
    stream.add_remote_reader()
    assert stream.subscribe(None, explicit=False) is None
    assert manual.starts == 1
    stream.add_remote_reader()
    assert stream.remove_remote_reader() is False
    assert stream.remove_remote_reader() is True
    assert manual.stops == 1


def test_disconnect_that_stops_its_own_stream_does_not_deadlock(daemon: ld.LabDaemon) -> None:
    class LoopTakesLock:
        """Like the seed's VISA device: disconnect() stops the stream; the loop takes the lock."""

        def __init__(self) -> None:
            self._stop = threading.Event()
            self._thread: threading.Thread | None = None
            self.samples = 0

        def connect(self) -> None:
            pass

        def disconnect(self) -> None:
            if self.is_streaming():
                self.stop_streaming()

        def start_streaming(self, callback: Any) -> None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
            self._thread.start()

        def stop_streaming(self, timeout: float | None = None) -> None:
            self._stop.set()
            if self._thread:
                self._thread.join(timeout=timeout)

        def is_streaming(self) -> bool:
            return self._thread is not None and self._thread.is_alive()

        def _loop(self, callback: Any) -> None:
            while not self._stop.is_set():
                with self._ld_lock:  # type: ignore[attr-defined]
                    self.samples += 1
                callback(self.samples)

    dev = daemon.add_device("visa", LoopTakesLock)
    daemon.connect_device("visa")
    col = Collector()
    daemon.start_streaming("visa", col, on_end=col.on_end)
    assert wait_until(lambda: len(col.data) > 10)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (dev.disconnect(), done.set()), name="test-disc")
    worker.start()
    assert done.wait(20), "disconnect() that stops its own stream deadlocked"
    worker.join(10)
    assert col.ended.is_set()
    assert not dev.is_streaming()


# -- the seed's device, unchanged -----------------------------------------------------------------


class ThreadSafeStreamingDevice:
    """The seed's class ("Thread Safety with _ld_lock"), plus the methods it leaves out."""

    def __init__(self, device_id: str, **kwargs):  # type: ignore[no-untyped-def]
        self.device_id = device_id
        self._streaming_thread = None
        self._stop_event = threading.Event()
        self._callback = None
        self._latest_data = None

    # Added in the seed's style: how it starts, stops and acquires.
    def start_streaming(self, callback, **kwargs):  # type: ignore[no-untyped-def]
        self._callback = callback
        self._stop_event.clear()
        self._streaming_thread = threading.Thread(target=self._streaming_loop, daemon=True)
        self._streaming_thread.start()

    def stop_streaming(self, timeout=None):  # type: ignore[no-untyped-def]
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)

    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    def _acquire_sample(self):  # type: ignore[no-untyped-def]
        return time.time()

    def _streaming_loop(self):  # type: ignore[no-untyped-def]
        while not self._stop_event.is_set():
            data = self._acquire_sample()

            # Protect shared state
            with self._ld_lock:
                self._latest_data = data

            # Callback runs outside lock
            if self._callback:
                self._callback(data)

            time.sleep(0.01)

    def get_latest_data(self):  # type: ignore[no-untyped-def]
        """Public method - automatically locked by framework."""
        return self._latest_data


class BreaksOnItsOwn(ThreadSafeStreamingDevice):
    """A seed-style loop that gives up by itself after a few samples."""

    def __init__(self, device_id: str, max_samples: int = 5, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(device_id, **kwargs)
        self._max_samples = max_samples

    def _streaming_loop(self):  # type: ignore[no-untyped-def]
        count = 0
        while not self._stop_event.is_set():
            data = self._acquire_sample()
            with self._ld_lock:
                self._latest_data = data
            if self._callback:
                self._callback(data)
            count += 1
            if count >= self._max_samples:
                break
            time.sleep(0.01)


def run_cycles(cycle: Callable[[int], None], cycles: int, per_cycle_timeout: float) -> None:
    """Run ``cycle(i)`` for each i on a worker thread; fail if any one cycle hangs."""
    done_count = 0
    failure: list[BaseException] = []

    def worker() -> None:
        nonlocal done_count
        try:
            for i in range(cycles):
                cycle(i)
                done_count += 1
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=worker, name="test-cycles", daemon=True)
    thread.start()
    for i in range(cycles):
        assert wait_until(lambda i=i: done_count > i or bool(failure), per_cycle_timeout), (
            f"cycle {i} hung"
        )
        if failure:
            raise failure[0]
    thread.join(per_cycle_timeout)


@pytest.mark.parametrize("via", ["daemon", "device"])
def test_seed_device_start_stop_100_times_never_hangs(daemon: ld.LabDaemon, via: str) -> None:
    dev = daemon.add_device("seed", ThreadSafeStreamingDevice)
    reads: list[Any] = []

    def cycle(i: int) -> None:
        col = Collector()

        def subscriber(datum: Any) -> None:
            col(datum)
            reads.append(dev.get_latest_data())  # a locked public method from the callback

        if via == "daemon":
            daemon.start_streaming("seed", subscriber, on_end=col.on_end)
        else:
            dev.start_streaming(subscriber, on_end=col.on_end)
        assert wait_until(lambda: len(col.data) >= 1, 10)
        if via == "daemon":
            daemon.stop_streaming("seed", timeout=10)
        else:
            dev.stop_streaming(timeout=10)
        assert col.ended.is_set()
        assert not dev.is_streaming()

    run_cycles(cycle, 100, per_cycle_timeout=15.0)
    assert len(reads) >= 100
    assert all(isinstance(r, float) for r in reads)


def test_seed_device_stopped_from_its_callback(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("seed", ThreadSafeStreamingDevice)
    col = Collector()

    def subscriber(datum: Any) -> None:
        col(datum)
        if len(col.data) == 3:
            dev.stop_streaming()

    daemon.start_streaming("seed", subscriber, on_end=col.on_end)
    assert col.ended.wait(10)
    assert col.end_error is None
    assert wait_until(lambda: not dev._streaming_thread.is_alive())
    assert daemon.get_last_error("seed") is None


def test_seed_style_loop_that_breaks_yields_the_end(daemon: ld.LabDaemon) -> None:
    daemon.streams.enable_history()
    dev = daemon.add_device("brk", BreaksOnItsOwn, max_samples=5)
    col = Collector()
    daemon.start_streaming("brk", col, on_end=col.on_end)
    assert col.ended.wait(10)
    assert len(col.data) == 5
    assert not dev.is_streaming()
    kinds = [kind for kind, _ in ring_frames(daemon, "brk")]
    assert kinds == ["device_data"] * 5 + ["stream_end"]


# -- states as data -------------------------------------------------------------------------


def test_stream_states_follow_the_table_and_each_change_publishes_one_event(
    daemon: ld.LabDaemon, manual: Any
) -> None:
    from labd.streams import STREAM_TRANSITIONS, StreamState

    assert set(STREAM_TRANSITIONS) == set(StreamState)
    seen: list[tuple[str, Any]] = []
    daemon.events.add_listener(
        lambda body: (
            seen.append((body["event"], body.get("run")))
            if body["event"].startswith("streaming_")
            else None
        )
    )
    stream = daemon.streams.get("m")
    assert stream.state is StreamState.IDLE
    daemon.start_streaming("m", Collector())
    daemon.start_streaming("m", Collector())  # joins: no second start, no event
    assert stream.state is StreamState.RUNNING
    daemon.stop_streaming("m")
    daemon.stop_streaming("m")  # a no-op: no event
    assert stream.state is StreamState.IDLE
    assert seen == [("streaming_started", 1), ("streaming_stopped", 1)]

    with stream._cond, pytest.raises(RuntimeError, match="cannot go from idle to stopping"):
        stream._enter(StreamState.STOPPING)
    assert stream.state is StreamState.IDLE
