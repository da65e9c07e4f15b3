"""The guide's five streaming classes run under labd as written, and so do their rebuilt twins."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import labd as ld
from helpers import Collector, wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VISA_YAML = EXAMPLES / "visa" / "sim_instrument.yaml"
VISA_ADDRESS = "TCPIP0::192.168.0.42::inst0::INSTR"
SIM_VOLTAGE = 1.2345


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"labd_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


seed = _load("seed_devices")
rebuilt = _load("seed_rebuilt")

# Class name -> kwargs for start_streaming (the guide's classes differ in what they accept).
STREAMERS: dict[str, dict[str, Any]] = {
    "ThreadSafeStreamingDevice": {},
    "RateLimitedStreamingDevice": {"sample_rate": 50.0},
    "RobustStreamingDevice": {},
    "BackpressureStreamingDevice": {"sample_rate": 50.0},
}


class FailingHubLikeCallback:
    """Raises on every datum; has labd's ``error``/``end`` extras, to drive a device directly."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.ended = threading.Event()

    def __call__(self, datum: Any) -> None:
        raise ValueError("bad datum")

    def error(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def end(self) -> None:
        self.ended.set()


@pytest.fixture
def sim_visa(monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("pyvisa_sim")
    monkeypatch.setenv("PYVISA_LIBRARY", f"{VISA_YAML}@sim")
    return VISA_ADDRESS


def _stream_a_few(daemon: ld.LabDaemon, device_id: str, **kwargs: Any) -> list[Any]:
    device = daemon.get_device(device_id)
    collector = Collector(5)
    subscription = daemon.start_streaming(device_id, collector, **kwargs)
    assert collector.enough.wait(10.0), f"{device_id} sent {len(collector.items)} items"
    assert device.is_streaming()
    daemon.stop_streaming(device_id, timeout=5.0)
    assert wait_until(lambda: not device.is_streaming())
    assert subscription.delivered >= 5
    return collector.items


@pytest.mark.parametrize("module", [seed, rebuilt], ids=["seed", "rebuilt"])
@pytest.mark.parametrize("class_name", list(STREAMERS))
def test_streams_under_labd(daemon: ld.LabDaemon, module: ModuleType, class_name: str) -> None:
    cls = getattr(module, class_name)
    device = daemon.add_device("dev1", cls)
    assert isinstance(device, cls)
    assert device.device_id == "dev1"
    daemon.connect_device("dev1")
    items = _stream_a_few(daemon, "dev1", **STREAMERS[class_name])
    assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for x in items)
    assert daemon.get_last_error("dev1") is None
    daemon.remove_device("dev1")
    assert daemon.list_devices() == []


@pytest.mark.parametrize("module", [seed, rebuilt], ids=["seed", "rebuilt"])
def test_stream_started_on_the_device_object(daemon: ld.LabDaemon, module: ModuleType) -> None:
    device = daemon.add_device("dev1", module.RateLimitedStreamingDevice)
    collector = Collector(3)
    device.start_streaming(collector, sample_rate=50.0)
    assert collector.enough.wait(10.0)
    device.stop_streaming()
    assert wait_until(lambda: not device.is_streaming())


@pytest.mark.parametrize("module", [seed, rebuilt], ids=["seed", "rebuilt"])
def test_thread_safe_device_keeps_latest_under_the_lock(
    daemon: ld.LabDaemon, module: ModuleType
) -> None:
    device = daemon.add_device("dev1", module.ThreadSafeStreamingDevice)
    assert device.get_latest_data() is None
    items = _stream_a_few(daemon, "dev1")
    assert isinstance(device.get_latest_data(), float)
    assert all(isinstance(x, float) for x in items)


@pytest.mark.parametrize("module", [seed, rebuilt], ids=["seed", "rebuilt"])
def test_failing_subscriber_does_not_reach_the_device(
    daemon: ld.LabDaemon, module: ModuleType
) -> None:
    device = daemon.add_device("dev1", module.RobustStreamingDevice)
    calls: list[Any] = []

    def failing(datum: Any) -> None:
        calls.append(datum)
        raise RuntimeError("subscriber broke")

    collector = Collector(15)
    daemon.start_streaming("dev1", failing)
    daemon.start_streaming("dev1", collector)
    # More failures than the device's own limit of 10: labd keeps them from the device.
    assert collector.enough.wait(10.0)
    assert wait_until(lambda: len(calls) > 12)
    assert device.is_streaming()
    assert device.get_error_count() == 0
    error = daemon.get_last_error("dev1")
    assert error is not None
    assert error["origin"] == "callback"
    assert "subscriber broke" in error["message"]
    daemon.stop_streaming("dev1", timeout=5.0)


def test_seed_visa_device_against_pyvisa_sim(daemon: ld.LabDaemon, sim_visa: str) -> None:
    device = daemon.add_device("dvm1", seed.VISAStreamingDevice, address=sim_visa)
    assert device.query_command == "MEAS?"
    daemon.connect_device("dvm1", timeout=10.0)
    items = _stream_a_few(daemon, "dvm1", sample_rate=50.0)
    assert items[:5] == [SIM_VOLTAGE] * 5
    daemon.disconnect_device("dvm1", timeout=10.0)
    daemon.disconnect_device("dvm1", timeout=10.0)


def test_seed_visa_device_refuses_to_stream_unconnected(daemon: ld.LabDaemon) -> None:
    daemon.add_device("dvm1", seed.VISAStreamingDevice, address=VISA_ADDRESS)
    with pytest.raises(RuntimeError, match="not connected"):
        daemon.start_streaming("dvm1", lambda datum: None)


def test_rebuilt_visa_device_against_pyvisa_sim(daemon: ld.LabDaemon, sim_visa: str) -> None:
    daemon.add_device("dvm1", rebuilt.VISAStreamingDevice, address=sim_visa)
    daemon.connect_device("dvm1", timeout=10.0)
    items = _stream_a_few(daemon, "dvm1", sample_rate=50.0)
    assert items[:5] == [SIM_VOLTAGE] * 5
    daemon.disconnect_device("dvm1", timeout=10.0)


def test_rebuilt_visa_reports_a_lost_instrument(daemon: ld.LabDaemon, sim_visa: str) -> None:
    device = daemon.add_device("dvm1", rebuilt.VISAStreamingDevice, address=sim_visa)
    daemon.connect_device("dvm1", timeout=10.0)
    collector = Collector(2)
    daemon.start_streaming("dvm1", collector, sample_rate=50.0)
    assert collector.enough.wait(10.0)
    device._instrument.close()  # the instrument goes away under the stream
    assert wait_until(lambda: not device.is_streaming())
    error = daemon.get_last_error("dvm1")
    assert error is not None
    assert error["origin"] == "device"
    # The stop reason, not just the last failure, is in the daemon's error records.
    assert error["type"] == "ErrorBudgetExhausted"
    assert "3 consecutive failures" in error["message"]


def test_rebuilt_robust_with_plain_function_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    device = rebuilt.RobustStreamingDevice("dev1")

    def failing(datum: Any) -> None:
        raise ValueError("bad datum")

    device.start_streaming(failing)
    assert wait_until(lambda: not device.is_streaming())
    assert device.get_error_count() == 10
    assert "bad datum" in caplog.text
    device.stop_streaming(timeout=5.0)


def test_rebuilt_robust_reports_errors_through_the_callback() -> None:
    device = rebuilt.RobustStreamingDevice("dev1")
    callback = FailingHubLikeCallback()
    device.start_streaming(callback)
    assert callback.ended.wait(10.0)
    assert wait_until(lambda: not device.is_streaming())
    assert wait_until(lambda: len(callback.errors) == 11)
    failures, reason = callback.errors[:10], callback.errors[10]
    assert all(isinstance(e, ValueError) for e in failures)
    assert isinstance(reason, ld.exceptions.ErrorBudgetExhausted)
    assert "10 consecutive failures" in str(reason)
    device.stop_streaming(timeout=5.0)


def test_rebuilt_backpressure_drops_instead_of_waiting() -> None:
    device = rebuilt.BackpressureStreamingDevice("dev1", max_queue_size=3)
    release = threading.Event()
    first = threading.Event()

    def slow(datum: Any) -> None:
        first.set()
        release.wait(10.0)

    device.start_streaming(slow, sample_rate=200.0)
    try:
        assert first.wait(10.0)
        # The consumer is stuck, yet acquisition goes on and the overflow is dropped.
        assert wait_until(lambda: device.get_dropped_count() >= 5)
        assert device.is_streaming()
    finally:
        release.set()
        device.stop_streaming(timeout=5.0)
    assert not device.is_streaming()
