"""Clients against a real labd server on a loopback port: proxies, streams, tasks, patterns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import wait_until

pytest.importorskip("uvicorn")

from labd import LabDaemon, TaskCancelledError, TaskContext
from labd.client import (
    DeviceBusyError,
    RemoteTaskContext,
    ServerAPI,
    ServerAPIError,
    SSEClient,
)
from labd.patterns import ensure_device, ensure_server
from labd.server import LabDaemonServer
from labd.sim import PowerMeter, TunableLaser, WavelengthSweep


class Counter:
    """Streams 0, 1, 2, ... at ``rate_hz`` on its own thread; some methods fail on purpose."""

    def __init__(self, device_id: str, **kwargs: Any) -> None:
        self.device_id = device_id
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, a: float, b: float = 0.0) -> float:
        return a + b

    def fail_value(self) -> None:
        raise ValueError("bad value")

    def fail_key(self) -> None:
        raise KeyError("missing")

    def fail_other(self) -> None:
        raise ZeroDivisionError("no can do")

    def start_streaming(self, callback: Callable[[int], object], rate_hz: float = 200.0) -> None:
        self._stop.clear()

        def loop() -> None:
            n = 0
            while not self._stop.wait(1.0 / rate_hz):
                callback(n)
                n += 1

        self._thread = threading.Thread(target=loop, name="labd-test-counter", daemon=True)
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class HoldCounter:
    """A task that owns ``counter`` until cancelled."""

    device_ids = ["counter"]

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def run(self, context: Any) -> str:
        context.cancel_event.wait(30)
        return "released"


class AddThroughDaemon:
    """A task written against ``context.daemon``, as for a local daemon."""

    def __init__(self, task_id: str, a: float = 1.0, b: float = 2.0) -> None:
        self.task_id = task_id
        self.a, self.b = a, b

    def run(self, context: Any) -> dict[str, Any]:
        counter = context.daemon.get_device("counter")
        laser = context.daemon.get_device("laser1")
        laser.set_wavelength(1552.5)
        context.report(progress=1.0, message="done")
        return {"sum": counter.add(self.a, b=self.b), "wavelength": laser.get_wavelength()}


def sse_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labd-sse-client")]


@pytest.fixture
def lab() -> Iterator[tuple[LabDaemon, str]]:
    daemon = LabDaemon()
    daemon.register_plugins(
        devices={"TunableLaser": TunableLaser, "PowerMeter": PowerMeter, "Counter": Counter},
        tasks={
            "WavelengthSweep": WavelengthSweep,
            "HoldCounter": HoldCounter,
            "AddThroughDaemon": AddThroughDaemon,
        },
    )
    daemon.add_device("laser1", "TunableLaser", settle_time_s=0.0)
    daemon.add_device("meter1", "PowerMeter")
    daemon.connect_device("laser1")
    daemon.connect_device("meter1")
    daemon.add_device("counter", "Counter")
    server = LabDaemonServer(daemon, port=0)
    server.start()
    assert wait_until(lambda: not server.url.endswith(":0"), timeout=10.0)
    try:
        yield daemon, server.url
    finally:
        server.stop()
        daemon.shutdown()
        assert wait_until(lambda: not sse_threads(), timeout=10.0)


@pytest.fixture
def api(lab: tuple[LabDaemon, str]) -> Iterator[ServerAPI]:
    with ServerAPI(lab[1], timeout=10.0) as client:
        yield client


def test_proxy_calls_methods_and_maps_errors(api: ServerAPI) -> None:
    laser = api.device("laser1")
    laser.set_wavelength(1551.25)
    assert laser.get_wavelength() == 1551.25
    assert "set_wavelength" in dir(laser)
    counter = api.daemon().get_device("counter")
    assert counter.add(2, b=3) == 5
    with pytest.raises(ValueError, match="bad value"):
        counter.fail_value()
    with pytest.raises(KeyError) as caught:
        counter.fail_key()
    assert caught.value.args == ("missing",)
    with pytest.raises(ServerAPIError) as other:
        counter.fail_other()
    assert other.value.status_code == 500
    assert "no can do" in str(other.value)
    with pytest.raises(AttributeError):
        counter.not_a_method()
    with pytest.raises((TypeError, ServerAPIError)):
        counter.add(1, 2, 3, 4)
    error = api.get_device_error("counter")
    assert error is not None and error["type"] == "ZeroDivisionError"
    api.clear_device_error("counter")
    assert api.get_device_error("counter") is None


def test_unknown_ids_are_404(api: ServerAPI) -> None:
    with pytest.raises(ServerAPIError) as caught:
        api.daemon().get_device("ghost")
    assert caught.value.status_code == 404
    assert "ghost" in str(caught.value)
    with pytest.raises(ServerAPIError) as stream_error:
        list(SSEClient(api.base_url).iter_device_stream("ghost"))
    assert stream_error.value.status_code == 404


def test_proxy_streaming_delivers_payloads_in_order(api: ServerAPI) -> None:
    counter = api.device("counter")
    received: list[int] = []
    subscription = counter.start_streaming(received.append, rate_hz=200.0)
    assert wait_until(lambda: len(received) >= 40)
    assert counter.is_streaming()
    counter.stop_streaming(timeout=5.0)
    assert not counter.is_streaming()
    assert not subscription.is_active()
    first = received[0]
    assert received[:40] == list(range(first, first + 40))
    assert subscription.delivered == len(received)
    assert subscription.dropped == 0


def test_event_stream_reports_state_changes(api: ServerAPI) -> None:
    events: list[dict[str, Any]] = []
    seen = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "device_added" and event.get("device_id") == "meter2":
            seen.set()

    client = SSEClient(api.base_url, on_event=on_event)
    client.start_event_stream()
    try:
        assert wait_until(lambda: client.connections == 1)
        info = ensure_device(api, "meter2", "PowerMeter", averaging=2)
        assert info["connected"] is True
        assert seen.wait(15.0)
    finally:
        client.stop_stream(timeout=5.0)
    assert all("event" in e and "timestamp" in e for e in events)


def test_reconnect_resumes_with_last_event_id_without_duplicates(api: ServerAPI) -> None:
    api.start_streaming("counter", rate_hz=200.0)
    stream = SSEClient(api.base_url, backoff_initial=0.05).iter_device_stream("counter")
    sequences: list[int] = []
    try:
        for event in stream:
            if event["event"] != "device_data":
                continue
            sequences.append(event["sequence"])
            if len(sequences) == 20:
                # Drop the connection under the stream, as a network failure would.
                stream._follower.abort_connection()
            if len(sequences) >= 80:
                break
    finally:
        stream.close()
        api.stop_streaming("counter")
    assert stream.connections >= 2
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


def test_stream_of_a_device_that_cannot_stream_is_refused_at_once(api: ServerAPI) -> None:
    errors: list[Exception] = []
    failed = threading.Event()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        failed.set()

    client = SSEClient(api.base_url, on_error=on_error)
    client.start_device_stream("laser1")
    assert failed.wait(15.0)
    client.stop_stream(timeout=5.0)
    assert isinstance(errors[0], ServerAPIError)
    assert errors[0].status_code is not None and 400 <= errors[0].status_code < 500


def test_stop_stream_returns_within_its_timeout_on_an_idle_stream(api: ServerAPI) -> None:
    client = SSEClient(api.base_url, read_timeout=60.0)
    client.start_event_stream()
    assert wait_until(lambda: client.connections == 1)
    started = time.monotonic()
    client.stop_stream(timeout=3.0)
    assert time.monotonic() - started < 3.0
    assert not client.is_running()


def test_ensure_server(lab: tuple[LabDaemon, str]) -> None:
    assert ensure_server(lab[1], timeout=5.0) is True


def test_task_written_against_context_daemon_runs_remotely(
    lab: tuple[LabDaemon, str], api: ServerAPI
) -> None:
    daemon, _ = lab
    local = daemon.execute_task("local-add", "AddThroughDaemon", a=4.0, b=5.0).wait(timeout=30)
    remote = api.daemon().run_task(AddThroughDaemon, task_id="remote-add", a=4.0, b=5.0)
    assert remote == local == {"sum": 9.0, "wavelength": 1552.5}

    sweep = api.daemon().run_task(
        WavelengthSweep, start_nm=1549.0, stop_nm=1550.0, step_nm=0.25, dwell_s=0.001
    )
    assert sweep["wavelength_nm"] == [1549.0, 1549.25, 1549.5, 1549.75, 1550.0]
    assert len(sweep["power_mw"]) == 5


class Scan:
    """The task of docs/tasks.md, as written there."""

    def __init__(self, task_id: str, points: int = 100, dwell_s: float = 0.1) -> None:
        self.points = points
        self.dwell_s = dwell_s
        self.device_ids = ["laser1", "meter1"]

    def run(self, context: Any) -> list[float]:
        laser = context.daemon.get_device("laser1")
        meter = context.daemon.get_device("meter1")
        readings = []
        for i in range(self.points):
            if not context.checkpoint():
                break
            laser.set_wavelength(1540 + i * 0.1)
            context.sleep(self.dwell_s)
            readings.append(meter.read_power())
            context.report(progress=(i + 1) / self.points, message=f"point {i + 1}")
        return readings


def test_the_documented_task_runs_against_a_server_with_the_same_context_api(
    lab: tuple[LabDaemon, str], api: ServerAPI
) -> None:
    daemon, _ = lab
    local = daemon.execute_task("scan-local", Scan, points=3, dwell_s=0.001).wait(timeout=30)
    remote = api.daemon()
    assert len(remote.run_task(Scan, task_id="scan-remote", points=3, dwell_s=0.001)) == 3
    assert len(local) == 3

    context = RemoteTaskContext(remote, "by-hand")
    assert isinstance(context, TaskContext) and context.cancelled is False
    assert context.checkpoint() is True and context.sleep(0.0) is True
    context.report(progress=0.5, message="half")
    assert (context.progress, context.message) == (0.5, "half")
    context.cancel_event.set()
    assert context.cancelled and not context.checkpoint() and not context.sleep(0.01)
    assert Scan("scan-cancelled", points=5, dwell_s=0.0).run(context) == []


def test_remote_task_handle(api: ServerAPI) -> None:
    remote = api.daemon()
    handle = remote.execute_task(
        "sweep", "WavelengthSweep", start_nm=1549.0, stop_nm=1550.0, step_nm=0.5, dwell_s=0.001
    )
    result = handle.wait(timeout=30)
    assert result["wavelength_nm"] == [1549.0, 1549.5, 1550.0]
    assert handle.status == "completed"
    assert handle.exception() is None
    handle.cancel()  # finished: changes nothing
    assert handle.status == "completed"
    assert api.wait_task("sweep", timeout=5)["result"] == result


def test_owned_device_is_busy_and_cancel_releases_it(api: ServerAPI) -> None:
    remote = api.daemon()
    holder = remote.execute_task("hold", "HoldCounter")
    assert holder.device_ids == ["counter"]
    with pytest.raises(DeviceBusyError) as caught:
        api.device("counter").add(1)
    assert "hold" in str(caught.value)
    assert holder.is_running()
    holder.cancel()
    with pytest.raises(TaskCancelledError) as cancelled:
        holder.wait(timeout=30)
    assert cancelled.value.result == "released"
    assert api.device("counter").add(1) == 1


def test_tokens_travel_in_the_header_and_refusals_are_reported(
    lab: tuple[LabDaemon, str],
) -> None:
    daemon, _ = lab
    server = LabDaemonServer(daemon, port=0, tokens={"view-t": "viewer", "op-t": "operator"})
    server.start()
    assert wait_until(lambda: not server.url.endswith(":0"), timeout=10.0)
    try:
        assert ensure_server(server.url, timeout=5.0) is True  # /health needs no token
        with ServerAPI(server.url) as anonymous, pytest.raises(ServerAPIError) as caught:
            anonymous.list_devices()
        assert caught.value.status_code == 401
        with ServerAPI(server.url, token="view-t") as viewer:
            assert "counter" in viewer.daemon().list_devices()
            with pytest.raises(ServerAPIError) as denied:
                viewer.device("counter").add(1)
            assert denied.value.status_code == 403
        with ServerAPI(server.url, token="op-t") as operator:
            assert operator.device("counter").add(1, b=1) == 2
        errors: list[Exception] = []
        failed = threading.Event()
        client = SSEClient(
            server.url, token="wrong", on_error=lambda e: (errors.append(e), failed.set())
        )
        client.start_event_stream()
        assert failed.wait(15.0)
        client.stop_stream(timeout=5.0)
        assert isinstance(errors[0], ServerAPIError) and errors[0].status_code == 401
    finally:
        server.stop()
