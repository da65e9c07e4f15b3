"""A device that guards its own ``start_streaming`` streams through every path labd offers.

The guard (``if self.is_streaming(): return``, or ``raise``) is the most common first line
of a driver's ``start_streaming``. labd must let the device's own ``self.is_streaming()``
reach the device's own method, or the guard sees labd's "starting" and no data ever flows.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from driverlab import TIMEOUT, Lab

import labd as ld
from helpers import Collector, wait_until

GUARDS = ["GuardedSource", "StrictSource"]


def sse_payloads(lab: Lab, device_id: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` ``device_data`` envelopes of ``GET /stream/devices/{id}``."""
    got: list[dict[str, Any]] = []
    with lab.http.stream("GET", f"/stream/devices/{device_id}") as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                body = orjson.loads(line[6:])
                if body.get("event") == "device_data":
                    got.append(body)
                    if len(got) >= n:
                        break
    return got


@pytest.mark.parametrize("kind", GUARDS)
def test_local_subscribers_get_data(lab: Lab, kind: str) -> None:
    dev = lab.add("src", kind)
    first, second = Collector(20), Collector(20)
    lab.daemon.start_streaming("src", first)
    dev.start_streaming(second)  # the device object itself, as scripts call it
    assert first.enough.wait(TIMEOUT) and second.enough.wait(TIMEOUT)
    assert dev.starts == 1  # the second subscriber joined; the device started once
    assert dev.is_streaming() is True
    lab.daemon.stop_streaming("src")
    assert dev.is_streaming() is False


@pytest.mark.parametrize("kind", GUARDS)
def test_record_writes_contiguous_sequences_while_two_subscribers_watch(
    lab: Lab, kind: str, tmp_path: Path
) -> None:
    lab.add("src", kind)
    watchers = [Collector(50), Collector(50)]
    for watcher in watchers:
        lab.daemon.start_streaming("src", watcher)
    path = tmp_path / "run.h5"
    with lab.daemon.record("src", path) as recording:
        assert wait_until(lambda: recording.recorded >= 100, timeout=TIMEOUT)
    assert all(w.enough.is_set() for w in watchers)
    loaded = ld.load_recording(path)
    sequence = np.asarray(loaded["sequence"])
    assert len(sequence) >= 100 and recording.lost == 0
    assert np.all(np.diff(sequence) == 1)


@pytest.mark.parametrize("kind", GUARDS)
def test_record_alone_starts_the_device(lab: Lab, kind: str, tmp_path: Path) -> None:
    lab.add("src", kind)
    path = tmp_path / "alone.h5"
    with lab.daemon.record("src", path) as recording:
        assert wait_until(lambda: recording.recorded >= 20, timeout=TIMEOUT)
    sequence = np.asarray(ld.load_recording(path)["sequence"])
    assert sequence[0] == 0 and np.all(np.diff(sequence) == 1)


@pytest.mark.parametrize("kind", GUARDS)
def test_an_sse_client_starts_the_stream_and_receives_data(lab: Lab, kind: str) -> None:
    dev = lab.add("src", kind)
    events = sse_payloads(lab, "src", 10)
    first = events[0]["sequence"]
    assert [e["sequence"] for e in events] == list(range(first, first + 10))
    assert all(isinstance(e["payload"], float) for e in events)
    assert dev.starts == 1
    # The stream an SSE subscription started stops once its last reader leaves.
    assert wait_until(lambda: not dev.is_streaming(), timeout=TIMEOUT)


@pytest.mark.parametrize("kind", GUARDS)
def test_explicit_start_over_http_then_a_viewer(lab: Lab, kind: str) -> None:
    dev = lab.add("src", kind)
    started = lab.http.post("/devices/src/streaming/start", json={"kwargs": {}})
    assert started.status_code == 200, started.text
    assert started.json()["streaming"] is True
    again = lab.http.post("/devices/src/streaming/start", json={"kwargs": {}})
    assert again.status_code == 200, again.text  # joining is not "already streaming"
    assert len(sse_payloads(lab, "src", 5)) == 5
    assert dev.is_streaming()  # an explicit start outlives its viewers
    assert dev.starts == 1
    stopped = lab.http.post("/devices/src/streaming/stop")
    assert stopped.json()["streaming"] is False and not dev.is_streaming()


@pytest.mark.parametrize("kind", GUARDS)
def test_a_remote_proxy_streams(lab: Lab, kind: str) -> None:
    lab.add("src", kind)
    remote = lab.api.device("src")
    got = Collector(10)
    subscription = remote.start_streaming(got)
    try:
        assert got.enough.wait(TIMEOUT)
        assert remote.is_streaming() is True
    finally:
        remote.stop_streaming()  # stops the stream and closes this proxy's subscriptions
    assert wait_until(lambda: not subscription.is_active(), timeout=TIMEOUT)
    assert remote.is_streaming() is False


class StreamingTask:
    """A task that watches a guarded device and returns the first readings it saw."""

    def __init__(self, task_id: str, n: int = 10) -> None:
        self.n = n
        self.device_ids = ["src"]

    def run(self, context: ld.TaskContext) -> list[float]:
        source = context.daemon.get_device("src")
        got: list[float] = []
        enough = threading.Event()

        def keep(value: float) -> None:
            got.append(value)
            if len(got) >= self.n:
                enough.set()

        source.start_streaming(keep)
        try:
            while not enough.wait(0.05):
                if not context.checkpoint():
                    break
        finally:
            source.stop_streaming()
        return got[: self.n]


@pytest.mark.parametrize("kind", GUARDS)
def test_a_task_streams_in_process_and_through_the_server(lab: Lab, kind: str) -> None:
    lab.add("src", kind)
    local = lab.daemon.execute_task("t-local", StreamingTask).wait(TIMEOUT)
    assert local == [float(i) for i in range(10)]
    lab.daemon.register_plugins(tasks={"StreamingTask": StreamingTask})
    lab.api.execute_task("t-remote", "StreamingTask", {"n": 5})
    assert lab.api.wait_task("t-remote", timeout=TIMEOUT)["result"] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_raise_form_of_the_guard_still_refuses_a_second_start_of_its_own(lab: Lab) -> None:
    """Outside callers join the stream; the device's own restart still meets its guard."""
    dev = lab.add("src", "StrictSource")
    got = Collector(3)
    lab.daemon.start_streaming("src", got)
    assert got.enough.wait(TIMEOUT)

    class Probe:
        error: BaseException | None = None

    def restart_from_inside() -> None:
        try:
            type(dev).start_streaming(dev, lambda _: None)  # the class's own method
        except RuntimeError as exc:
            Probe.error = exc

    restart_from_inside()
    assert isinstance(Probe.error, RuntimeError) and "already streaming" in str(Probe.error)


# -- the device's own calls reach its own code -----------------------------------------------


class RecordsOwnCalls:
    """Keeps what its own ``is_streaming()`` answered inside ``start_streaming``."""

    def __init__(self, device_id: str) -> None:
        self.seen: list[Any] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start_streaming(self, callback: Any) -> None:
        self.seen.append(self.is_streaming())
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
        self._thread.start()
        self.seen.append(self.is_streaming())

    def _loop(self, callback: Any) -> None:
        while not self._stop.wait(0.002):
            callback(1)

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def test_own_is_streaming_answers_for_the_device_not_for_labd(daemon: ld.LabDaemon) -> None:
    daemon.add_device("rec", RecordsOwnCalls)
    dev = daemon.get_device("rec")
    daemon.start_streaming("rec", lambda _: None)
    assert dev.seen == [False, True]


def test_disconnect_stopping_its_own_stream_ends_it_for_subscribers(lab: Lab) -> None:
    dev = lab.add("meter", "OldStyleMeter")
    got = Collector(10)
    sub = lab.daemon.start_streaming("meter", got, on_end=got.on_end)
    assert got.enough.wait(TIMEOUT)
    dev.disconnect()  # the seed's VISA pattern: stops its own stream, its loop takes _ld_lock
    assert got.ended.wait(TIMEOUT) and not sub.active
    assert lab.daemon.device_info("meter")["streaming"] is False
    dev.connect()
    again = Collector(5)
    lab.daemon.start_streaming("meter", again)
    assert again.enough.wait(TIMEOUT)


def test_a_stop_asked_for_while_starting_runs_on_a_labd_thread(daemon: ld.LabDaemon) -> None:
    stopped_on: list[str] = []

    class ConfirmsFirstFrame:
        """Returns from ``start_streaming`` only once its SDK thread delivered a frame."""

        def __init__(self, device_id: str) -> None:
            self.running = False
            self._delivered = threading.Event()

        def start_streaming(self, callback: Any) -> None:
            self.running = True
            self._delivered.clear()
            threading.Thread(target=self._sdk, args=(callback,), daemon=True).start()
            if not self._delivered.wait(10):
                raise TimeoutError("no first frame")

        def _sdk(self, callback: Any) -> None:
            callback("first")
            self._delivered.set()

        def stop_streaming(self, timeout: float | None = None) -> None:
            stopped_on.append(threading.current_thread().name)
            self.running = False

        def is_streaming(self) -> bool:
            return self.running

    dev = daemon.add_device("r", ConfirmsFirstFrame)
    got: list[Any] = []

    def stop_at_first(value: Any) -> None:
        got.append(value)
        dev.stop_streaming()  # from inside a subscriber, while the device is starting

    sub = daemon.start_streaming("r", stop_at_first)
    assert wait_until(lambda: stopped_on, timeout=TIMEOUT)
    assert stopped_on == [stopped_on[0]] and stopped_on[0].startswith("labd-stop-")
    assert threading.current_thread().name not in stopped_on
    assert got == ["first"]
    assert wait_until(lambda: not sub.active, timeout=TIMEOUT)


class ReconnectingSensor:
    """A sensor whose vendor link drops and comes back; the SDK tells it through callbacks.

    ``_on_link_lost``/``_on_link_back`` stand for the SDK's notifications: device code
    that stops and restarts its own stream, without holding the lock.
    """

    def __init__(self, device_id: str) -> None:
        self.starts = 0
        self._callback: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start_streaming(self, callback: Any) -> None:
        if self.is_streaming():
            return
        self.starts += 1
        self._callback = callback
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(0.002):
            self._callback(n)
            n += 1

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_link_lost(self) -> None:
        self.stop_streaming()

    def _on_link_back(self) -> None:
        self.start_streaming(self._callback)


def test_a_device_that_restarts_itself_after_its_stream_ended_is_adopted(
    daemon: ld.LabDaemon,
) -> None:
    dev = daemon.add_device("sensor", ReconnectingSensor)
    first = Collector(5)
    daemon.start_streaming("sensor", first, on_end=first.on_end)
    assert first.enough.wait(TIMEOUT)
    dev._on_link_lost()
    assert first.ended.wait(TIMEOUT)  # the watcher saw it stop: subscribers are told
    assert daemon.device_info("sensor")["streaming"] is False
    dev._on_link_back()  # the device streams again on its own, with labd's old callback
    assert daemon.device_info("sensor")["streaming"] is True
    later = Collector(5)
    daemon.start_streaming("sensor", later)  # joins the adopted run: no second start
    assert later.enough.wait(TIMEOUT)
    assert dev.starts == 2


def test_subscribing_right_after_the_device_stopped_itself_starts_it_again(
    daemon: ld.LabDaemon,
) -> None:
    dev = daemon.add_device("sensor", ReconnectingSensor)
    first = Collector(5)
    daemon.start_streaming("sensor", first, on_end=first.on_end)
    assert first.enough.wait(TIMEOUT)
    dev._on_link_lost()  # before the watcher has noticed
    again = Collector(5)
    daemon.start_streaming("sensor", again)  # must not join the dead stream
    assert again.enough.wait(TIMEOUT)
    assert dev.starts == 2 and first.ended.is_set()


def test_a_stop_from_another_thread_waits_for_a_start_under_way(daemon: ld.LabDaemon) -> None:
    events: list[str] = []

    class SlowToArm:
        """``start_streaming`` returns once the hardware is armed (a gate here)."""

        def __init__(self, device_id: str) -> None:
            self.armed = threading.Event()
            self.running = False

        def start_streaming(self, callback: Any) -> None:
            events.append("start begins")
            assert self.armed.wait(10)
            self.running = True
            events.append("start returns")

        def stop_streaming(self, timeout: float | None = None) -> None:
            events.append(f"stop on {threading.current_thread().name}")
            self.running = False

        def is_streaming(self) -> bool:
            return self.running

    dev = daemon.add_device("slow", SlowToArm)
    sub: list[Any] = []
    starter = threading.Thread(
        target=lambda: sub.append(daemon.start_streaming("slow", lambda _: None)),
        name="test-starter",
    )
    starter.start()
    assert wait_until(lambda: events == ["start begins"], timeout=TIMEOUT)
    stopper = threading.Thread(
        target=daemon.stop_streaming, args=("slow", 10.0), name="test-stopper"
    )
    stopper.start()
    assert wait_until(lambda: daemon.streams.get("slow")._cond._waiters, timeout=TIMEOUT)
    assert events == ["start begins"]  # the stop waits for the start
    dev.armed.set()
    starter.join(TIMEOUT)
    stopper.join(TIMEOUT)
    # A stop with a timeout runs the device's stop on a labd thread and waits for it.
    assert events == ["start begins", "start returns", "stop on labd-stop-slow"]
    assert sub and not sub[0].active
