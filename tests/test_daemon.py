"""LabDaemon: plugins, device lifecycle, error records, contexts and shutdown (SPEC section 2)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

import labd as ld
from helpers import labd_threads, wait_until
from labd.exceptions import (
    DeviceArgumentError,
    DuplicateDeviceError,
    PluginConflictError,
    UnknownDeviceError,
    UnknownDeviceTypeError,
)


class Instrument:
    """A device that counts connect/disconnect calls and can be told to fail."""

    def __init__(self, device_id: str, fail_connect: bool = False) -> None:
        self.device_id = device_id
        self.fail_connect = fail_connect
        self.connects = 0
        self.disconnects = 0
        self.log: list[str] = []

    def connect(self) -> None:
        if self.fail_connect:
            raise OSError("no instrument at that address")
        self.connects += 1
        self.log.append("connect")

    def disconnect(self) -> None:
        self.disconnects += 1
        self.log.append("disconnect")

    def read(self) -> float:
        return 1.5


class StreamingInstrument(Instrument):
    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.callback: Any = None

    def start_streaming(self, callback: Any, **kwargs: Any) -> None:
        self.log.append("start_streaming")
        self.callback = callback

    def stop_streaming(self, timeout: float | None = None) -> None:
        self.log.append("stop_streaming")
        self.callback = None

    def is_streaming(self) -> bool:
        return self.callback is not None


class SlowConnect:
    """connect() blocks until released; disconnect() counts."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.disconnects = 0
        self.connected = False

    def connect(self) -> None:
        self.entered.set()
        self.release.wait(30)
        self.connected = True

    def disconnect(self) -> None:
        self.disconnects += 1
        self.connected = False


def lookup_error_names(exc: BaseException, *names: str) -> None:
    assert isinstance(exc, ValueError)
    assert isinstance(exc, ld.LabDaemonException)
    for name in names:
        assert repr(name) in str(exc), (name, str(exc))


class Recorder:
    """A state-change event listener."""

    def __init__(self, daemon: ld.LabDaemon) -> None:
        self.events: list[dict[str, Any]] = []
        daemon.events.add_listener(self.events.append)

    def names(self, **match: Any) -> list[str]:
        return [e["event"] for e in self.events if all(e.get(k) == v for k, v in match.items())]


# -- plugins -------------------------------------------------------------------------------


def test_register_plugins_and_add_by_type_name(daemon: ld.LabDaemon) -> None:
    daemon.register_plugins(devices={"instrument": Instrument})
    daemon.register_plugins(devices={"instrument": Instrument})  # same class again: fine
    dev = daemon.add_device("i1", "instrument")
    assert isinstance(dev, Instrument)
    assert daemon.device_info("i1")["device_type"] == "instrument"


@pytest.mark.parametrize("kind", ["devices", "tasks"])
def test_registering_a_name_twice_with_another_class_is_an_error(
    daemon: ld.LabDaemon, kind: str
) -> None:
    class Other:
        pass

    class Fresh:
        pass

    daemon.register_plugins(**{kind: {"thing": Instrument}})
    with pytest.raises(PluginConflictError) as info:
        daemon.register_plugins(**{kind: {"fresh": Fresh, "thing": Other}})
    lookup_error_names(info.value, "thing")
    registry = daemon.device_types() if kind == "devices" else daemon.task_types()
    assert registry == {"thing": Instrument}  # all or nothing


def test_register_plugins_refuses_non_classes(daemon: ld.LabDaemon) -> None:
    with pytest.raises(TypeError):
        daemon.register_plugins(devices={"x": Instrument("x")})  # type: ignore[dict-item]


def test_unknown_device_type(daemon: ld.LabDaemon) -> None:
    with pytest.raises(UnknownDeviceTypeError) as info:
        daemon.add_device("i1", "no-such-type")
    lookup_error_names(info.value, "no-such-type")


def test_duplicate_device_id(daemon: ld.LabDaemon) -> None:
    first = daemon.add_device("i1", Instrument)
    with pytest.raises(DuplicateDeviceError) as info:
        daemon.add_device("i1", Instrument)
    lookup_error_names(info.value, "i1")
    assert daemon.get_device("i1") is first


def test_add_device_requires_a_non_empty_string_id(daemon: ld.LabDaemon) -> None:
    with pytest.raises(ValueError):
        daemon.add_device("", Instrument)


def test_list_get_and_unknown_ids(daemon: ld.LabDaemon) -> None:
    a = daemon.add_device("a", Instrument)
    b = daemon.add_device("b", Instrument)
    assert daemon.list_devices() == ["a", "b"]
    assert daemon.get_device("a") is a and daemon.get_device("b") is b
    for call in (
        daemon.get_device,
        daemon.remove_device,
        daemon.connect_device,
        daemon.disconnect_device,
        daemon.get_last_error,
        daemon.clear_last_error,
        daemon.stop_streaming,
    ):
        with pytest.raises(UnknownDeviceError) as info:
            call("nope")
        lookup_error_names(info.value, "nope")
    with pytest.raises(UnknownDeviceError):
        daemon.start_streaming("nope", print)


def test_device_object_not_held_is_an_error(daemon: ld.LabDaemon) -> None:
    stranger = StreamingInstrument("s")
    removed = daemon.add_device("r", StreamingInstrument)
    daemon.remove_device("r")
    for obj in (stranger, removed):
        for call in (
            daemon.remove_device,
            daemon.connect_device,
            daemon.disconnect_device,
            daemon.stop_streaming,
        ):
            with pytest.raises(UnknownDeviceError, match="not held"):
                call(obj)
        with pytest.raises(UnknownDeviceError):
            daemon.start_streaming(obj, print)
    assert stranger.connects == 0 and stranger.disconnects == 0


def test_lifecycle_by_object_and_events(daemon: ld.LabDaemon) -> None:
    events = Recorder(daemon)
    dev = daemon.add_device("i1", Instrument)
    daemon.connect_device(dev)
    assert dev.connects == 1
    assert daemon.device_info("i1")["connected"] is True
    daemon.disconnect_device(dev)
    assert dev.disconnects == 1
    assert daemon.device_info("i1")["connected"] is False
    daemon.remove_device(dev)
    assert daemon.list_devices() == []
    assert events.names(device_id="i1") == [
        "device_added",
        "device_connected",
        "device_disconnected",
        "device_removed",
    ]


def test_device_info_shape(daemon: ld.LabDaemon) -> None:
    daemon.add_device("i1", Instrument)
    assert daemon.device_info("i1") == {
        "device_id": "i1",
        "device_type": "Instrument",
        "connected": False,
        "streaming": False,
        "owned_by": None,
        "last_error": None,
    }


def test_disconnect_is_idempotent(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("i1", Instrument)
    daemon.disconnect_device("i1")  # never connected: nothing to do
    assert dev.disconnects == 0
    daemon.connect_device("i1")
    daemon.disconnect_device("i1")
    daemon.disconnect_device("i1")
    assert dev.disconnects == 1


def test_device_without_connect_methods(daemon: ld.LabDaemon) -> None:
    class Bare:
        def read(self) -> int:
            return 1

    daemon.add_device("b", Bare)
    daemon.connect_device("b")
    assert daemon.device_info("b")["connected"] is True
    daemon.disconnect_device("b")
    daemon.disconnect_device("b")
    daemon.remove_device("b")


def test_connect_raising_is_device_connection_error_chained(daemon: ld.LabDaemon) -> None:
    daemon.add_device("i1", Instrument, fail_connect=True)
    with pytest.raises(ld.DeviceConnectionError, match="'i1'") as info:
        daemon.connect_device("i1")
    assert isinstance(info.value.__cause__, OSError)
    assert daemon.device_info("i1")["connected"] is False
    error = daemon.get_last_error("i1")
    assert error is not None
    assert error["type"] == "OSError"
    assert error["origin"] == "device"
    assert error["context"]["device_id"] == "i1"


@pytest.mark.parametrize("by_object", [False, True])
def test_connect_timeout_raises_at_once_then_disconnects_late_connect(
    daemon: ld.LabDaemon, by_object: bool
) -> None:
    dev = daemon.add_device("slow", SlowConnect)
    try:
        t0 = time.monotonic()
        with pytest.raises(ld.DeviceTimeoutError, match="'slow'") as info:
            daemon.connect_device(dev if by_object else "slow", timeout=0.2)
        assert time.monotonic() - t0 < 5.0
        assert isinstance(info.value, TimeoutError)
        assert dev.entered.is_set() and not dev.connected
        assert dev.disconnects == 0
        error = daemon.get_last_error("slow")
        assert error is not None and error["type"] == "DeviceTimeoutError"
    finally:
        dev.release.set()
    assert wait_until(lambda: dev.disconnects == 1)
    assert not dev.connected
    assert daemon.device_info("slow")["connected"] is False
    assert dev.disconnects == 1


def test_connect_within_timeout(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("i1", Instrument)
    daemon.connect_device("i1", timeout=10.0)
    assert dev.connects == 1
    daemon.disconnect_device("i1", timeout=10.0)
    assert dev.disconnects == 1


def test_remove_stops_streaming_before_disconnecting(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("s", StreamingInstrument)
    daemon.connect_device("s")
    ended = threading.Event()
    daemon.start_streaming("s", lambda data: None, on_end=lambda error: ended.set())
    daemon.remove_device("s")
    assert dev.log == ["connect", "start_streaming", "stop_streaming", "disconnect"]
    assert ended.is_set()
    assert daemon.list_devices() == []


def test_disconnect_stops_streaming_first(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("s", StreamingInstrument)
    daemon.connect_device("s")
    daemon.start_streaming("s", lambda data: None)
    daemon.disconnect_device("s")
    assert dev.log == ["connect", "start_streaming", "stop_streaming", "disconnect"]
    assert not dev.is_streaming()


def test_direct_connect_calls_are_tracked(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("i1", Instrument)
    dev.connect()
    assert daemon.device_info("i1")["connected"] is True
    dev.disconnect()
    assert daemon.device_info("i1")["connected"] is False


# -- error records ---------------------------------------------------------------------------


def test_error_record_shape_and_clear(daemon: ld.LabDaemon) -> None:
    events = Recorder(daemon)
    daemon.add_device("i1", Instrument, fail_connect=True)
    assert daemon.get_last_error("i1") is None
    with pytest.raises(ld.DeviceConnectionError):
        daemon.connect_device("i1")
    error = daemon.get_last_error("i1")
    assert error is not None
    assert set(error) == {"type", "message", "origin", "timestamp", "traceback", "context"}
    assert error["type"] == "OSError"
    assert error["message"] == "no instrument at that address"
    assert error["origin"] == "device"
    stamp = datetime.fromisoformat(error["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert error["timestamp"].endswith("Z")
    assert isinstance(error["traceback"], str)
    assert "raise OSError" in error["traceback"]
    assert error["context"] == {"device_id": "i1", "action": "connect"}
    assert daemon.device_info("i1")["last_error"] == error
    assert "error_recorded" in events.names(device_id="i1")
    daemon.clear_last_error("i1")
    assert daemon.get_last_error("i1") is None
    assert events.names(device_id="i1")[-1] == "error_cleared"
    daemon.clear_last_error("i1")  # nothing to clear: no error


def test_callback_errors_are_recorded_with_origin_callback(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("s", StreamingInstrument)

    def bad(data: Any) -> None:
        raise ZeroDivisionError("bad subscriber")

    daemon.start_streaming("s", bad)
    dev.callback(1.0)
    error = daemon.get_last_error("s")
    assert error is not None
    assert (error["type"], error["origin"]) == ("ZeroDivisionError", "callback")
    assert error["message"] == "bad subscriber"


def test_remove_forgets_error_record(daemon: ld.LabDaemon) -> None:
    daemon.add_device("i1", Instrument, fail_connect=True)
    with pytest.raises(ld.DeviceConnectionError):
        daemon.connect_device("i1")
    daemon.remove_device("i1")
    daemon.add_device("i1", Instrument)
    assert daemon.get_last_error("i1") is None


# -- contexts --------------------------------------------------------------------------------


def test_device_context_adds_connects_and_cleans_up(daemon: ld.LabDaemon) -> None:
    with daemon.device_context("i1", Instrument) as dev:
        assert daemon.get_device("i1") is dev
        assert dev.connects == 1
    assert dev.disconnects == 1
    assert daemon.list_devices() == []


def test_device_context_cleans_up_on_error(daemon: ld.LabDaemon) -> None:
    with pytest.raises(KeyError), daemon.device_context("i1", Instrument) as dev:
        raise KeyError("inside")
    assert dev.disconnects == 1
    assert daemon.list_devices() == []


def test_device_context_removes_device_whose_connect_fails(daemon: ld.LabDaemon) -> None:
    with (
        pytest.raises(ld.DeviceConnectionError),
        daemon.device_context("i1", Instrument, fail_connect=True),
    ):
        pytest.fail("the body must not run")
    assert daemon.list_devices() == []


class Forever:
    def __init__(self) -> None:
        self.started = threading.Event()

    def run(self, context: ld.TaskContext) -> str:
        self.started.set()
        context.cancel_event.wait(30)
        return "partial"


def test_task_context_cancels_and_waits_on_exit(daemon: ld.LabDaemon) -> None:
    with daemon.task_context("t", Forever) as handle:
        assert handle.task.started.wait(10)
        assert handle.is_running()
    assert not handle.is_running()
    assert handle.status == "cancelled"
    assert handle.result == "partial"


def test_task_context_cancels_on_error(daemon: ld.LabDaemon) -> None:
    with pytest.raises(RuntimeError, match="boom"), daemon.task_context("t", Forever) as handle:
        assert handle.task.started.wait(10)
        raise RuntimeError("boom")
    assert handle.status == "cancelled"
    assert not handle.is_running()


# -- shutdown -------------------------------------------------------------------------------


class Looper:
    """Streams from its own (non-labd) thread, like the seed's devices."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.disconnects = 0

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        self.disconnects += 1

    def start_streaming(self, callback: Any, **kwargs: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
        self._thread.start()

    def _loop(self, callback: Any) -> None:
        n = 0
        while not self._stop.wait(0.001):
            callback(n)
            n += 1

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def test_shutdown_stops_streams_cancels_tasks_disconnects_devices() -> None:
    daemon = ld.LabDaemon()
    before = set(labd_threads())
    dev = daemon.add_device("loop", Looper)
    daemon.connect_device("loop")
    ended = threading.Event()
    queued: list[Any] = []
    daemon.start_streaming("loop", queued.append, queue_size=10, on_end=lambda e: ended.set())
    daemon.start_streaming("loop", lambda data: None)
    handle = daemon.execute_task("t", Forever)
    assert handle.task.started.wait(10)
    daemon.call_device("loop", "connect", timeout=5.0)  # starts the labd-call thread
    assert wait_until(lambda: len(queued) > 3)
    assert {t.name for t in labd_threads()} - {t.name for t in before} >= {
        "labd-stream-watch",
        "labd-task-t",
        "labd-call-loop",
    }

    daemon.shutdown(timeout=10.0)

    assert ended.is_set()
    assert not dev.is_streaming()
    assert handle.status == "cancelled"
    assert dev.disconnects == 1
    assert daemon.device_info("loop")["connected"] is False
    assert [t.name for t in labd_threads() if t not in before] == []
    daemon.shutdown()  # idempotent
    assert dev.disconnects == 1
    assert daemon.is_shut_down


def test_daemon_is_a_context_manager() -> None:
    with ld.LabDaemon() as daemon:
        dev = daemon.add_device("i1", Instrument)
        daemon.connect_device("i1")
    assert dev.disconnects == 1
    assert daemon.is_shut_down


def test_shutdown_names_a_hung_call_thread_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = ld.LabDaemon()
    dev = daemon.add_device("hung", SlowConnect)
    daemon.add_device("ok", Instrument)
    daemon.connect_device("ok")
    try:
        with pytest.raises(ld.DeviceTimeoutError):
            daemon.connect_device("hung", timeout=0.1)
        with caplog.at_level(logging.WARNING, logger="labd"):
            t0 = time.monotonic()
            daemon.shutdown(timeout=1.0)
            assert time.monotonic() - t0 < 8.0
        shutdown_lines = [r.getMessage() for r in caplog.records if "shutdown" in r.getMessage()]
        assert any("hung" in line and "labd-call" in line for line in shutdown_lines)
        assert not any("'ok'" in line or " ok" in line for line in shutdown_lines)
        alive = [t.name for t in labd_threads()]
        assert "labd-call-hung" in alive
        assert [n for n in alive if n != "labd-call-hung"] == []
        assert daemon.get_device("ok").disconnects == 1
    finally:
        dev.release.set()
    # Once the late connect returns, labd disconnects it and the thread ends.
    assert wait_until(lambda: dev.disconnects == 1)
    assert wait_until(lambda: "labd-call-hung" not in [t.name for t in labd_threads()])


@pytest.mark.allow_threads("labd-call-stuck")
def test_hung_call_thread_may_outlive_the_test_when_whitelisted() -> None:
    release = threading.Event()

    class Stuck:
        def read(self) -> None:
            release.wait(20)

    daemon = ld.LabDaemon()
    daemon.add_device("stuck", Stuck)
    with pytest.raises(ld.DeviceTimeoutError):
        daemon.call_device("stuck", "read", timeout=0.05)
    daemon.shutdown(timeout=0.5)
    assert "labd-call-stuck" in [t.name for t in labd_threads()]
    # Released later, by a timer outside labd: the whitelist covers the meantime.
    timer = threading.Timer(0.5, release.set)
    timer.daemon = True
    timer.start()


def test_negative_completed_task_buffer_is_refused() -> None:
    with pytest.raises(ValueError):
        ld.LabDaemon(completed_task_buffer=-1)


def test_call_device_checks_arguments_before_touching_the_device(daemon: ld.LabDaemon) -> None:
    calls: list[float] = []

    class Stage:
        def __init__(self, device_id: str) -> None:
            pass

        def move_to(self, position_mm: float, *, speed: float = 1.0) -> float:
            calls.append(position_mm)
            return position_mm

    daemon.add_device("stage", Stage)
    assert daemon.call_device("stage", "move_to", [2.5], {"speed": 2.0}) == 2.5
    for args, kwargs in (([], {}), ([1, 2], {}), ([1], {"sped": 2})):
        with pytest.raises(DeviceArgumentError, match=r"stage\.move_to") as caught:
            daemon.call_device("stage", "move_to", args, kwargs)
        assert isinstance(caught.value, TypeError)
    assert calls == [2.5]  # the refused calls never reached the device
    with pytest.raises(AttributeError, match="no public method '_secret'"):
        daemon.call_device("stage", "_secret")
    record = daemon.device_record("stage")
    assert record.spec("move_to") is record.spec("move_to")  # worked out once
