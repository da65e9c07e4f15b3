"""The simulated lab (labd.sim) under a real LabDaemon: devices, physics, and the sweep task."""

from __future__ import annotations

import itertools
import math
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import labd as ld
from helpers import Collector, wait_until
from labd.sim import (
    Camera,
    OpticalBench,
    PowerMeter,
    StreamingDAQ,
    TunableLaser,
    WavelengthSweep,
    get_bench,
    lorentzian_transmission,
    setup_demo,
)

_bench_ids = itertools.count()


@pytest.fixture
def bench_name() -> str:
    """A bench of its own for each test, so lasers of other tests never shine on it."""
    return f"test-sim-{next(_bench_ids)}"


@pytest.fixture
def optics(daemon: ld.LabDaemon, bench_name: str) -> SimpleNamespace:
    """A connected laser (no settle time) and noise-free meter on a private bench."""
    laser = daemon.add_device("laser1", TunableLaser, bench=bench_name, settle_time_s=0.0)
    meter = daemon.add_device("meter1", PowerMeter, bench=bench_name, noise_mw=0.0)
    daemon.connect_device("laser1")
    daemon.connect_device("meter1")
    return SimpleNamespace(laser=laser, meter=meter, bench=get_bench(bench_name))


# -- physics -----------------------------------------------------------------------


def test_lorentzian_line_shape() -> None:
    assert lorentzian_transmission(1550.0) == pytest.approx(0.3)
    assert lorentzian_transmission(1550.4) == pytest.approx(1 - 0.7 / 2)
    assert lorentzian_transmission(1549.6) == pytest.approx(1 - 0.7 / 2)
    assert lorentzian_transmission(1500.0) == pytest.approx(1.0, abs=1e-3)
    curve = lorentzian_transmission(np.array([1549.6, 1550.0, 1550.4]))
    assert isinstance(curve, np.ndarray)
    np.testing.assert_allclose(curve, [0.65, 0.3, 0.65])


def test_bench_sample_is_configurable(bench_name: str) -> None:
    bench = get_bench(bench_name)
    assert get_bench(bench_name) is bench
    bench.set_sample(center_nm=1540.0, width_nm=1.0, depth=0.5)
    assert bench.get_sample() == {"center_nm": 1540.0, "width_nm": 1.0, "depth": 0.5}
    assert bench.transmission(1540.0) == pytest.approx(0.5)
    assert bench.transmission(1541.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="depth"):
        bench.set_sample(depth=1.5)
    with pytest.raises(ValueError, match="width_nm"):
        OpticalBench("x", width_nm=0.0)


# -- laser and meter -----------------------------------------------------------------


def test_laser_calls_and_status(optics: SimpleNamespace) -> None:
    laser = optics.laser
    laser.set_wavelength(1551.25)
    assert laser.get_wavelength() == 1551.25
    laser.set_power(2.5)
    assert laser.get_power() == 2.5
    assert laser.is_output_enabled() is False
    laser.enable_output()
    assert laser.is_output_enabled() is True
    status = laser.get_status()
    assert status["connected"] is True
    assert status["wavelength_nm"] == 1551.25
    assert status["power_mw"] == 2.5
    assert status["output_enabled"] is True
    laser.disable_output()
    assert laser.is_output_enabled() is False


def test_laser_range_errors_name_the_range(optics: SimpleNamespace) -> None:
    laser = optics.laser
    with pytest.raises(ValueError, match="1500-1600 nm"):
        laser.set_wavelength(1700.0)
    with pytest.raises(ValueError, match="1500-1600 nm"):
        laser.set_wavelength(1499.9)
    with pytest.raises(ValueError, match="power"):
        laser.set_power(-1.0)
    assert laser.get_wavelength() == 1550.0


def test_laser_settles(daemon: ld.LabDaemon, bench_name: str) -> None:
    laser = daemon.add_device("laser1", TunableLaser, bench=bench_name, settle_time_s=0.05)
    daemon.connect_device("laser1")
    started = time.monotonic()
    laser.set_wavelength(1549.0)
    assert time.monotonic() - started >= 0.05


def test_devices_refuse_calls_until_connected(daemon: ld.LabDaemon, bench_name: str) -> None:
    laser = daemon.add_device("laser1", TunableLaser, bench=bench_name)
    meter = daemon.add_device("meter1", PowerMeter, bench=bench_name)
    daq = daemon.add_device("daq1", StreamingDAQ)
    camera = daemon.add_device("camera1", Camera)
    for call in (
        lambda: laser.set_wavelength(1550.0),
        laser.enable_output,
        meter.read_power,
        daq.read,
        camera.snap,
    ):
        with pytest.raises(ld.DeviceNotConnectedError):
            call()
    with pytest.raises(ld.DeviceNotConnectedError):
        daq.start_streaming(lambda datum: None)
    assert laser.get_status()["connected"] is False


def test_disconnect_is_idempotent(daemon: ld.LabDaemon, bench_name: str) -> None:
    setup_demo(daemon, bench=bench_name)
    for device_id in daemon.list_devices():
        device = daemon.get_device(device_id)
        device.disconnect()
        device.disconnect()
        daemon.disconnect_device(device_id)
        assert device.is_connected() is False


def test_meter_sees_laser_through_the_sample(optics: SimpleNamespace) -> None:
    laser, meter, bench = optics.laser, optics.meter, optics.bench
    assert meter.read_power() == 0.0  # output still off
    laser.set_power(2.0)
    laser.enable_output()
    for wavelength in (1545.0, 1549.8, 1550.0, 1550.3):
        laser.set_wavelength(wavelength)
        assert meter.read_power() == pytest.approx(2.0 * bench.transmission(wavelength))
    laser.disable_output()
    assert meter.read_power() == 0.0
    laser.enable_output()
    laser.disconnect()
    assert meter.read_power() == 0.0


def test_benches_are_separate(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    other = daemon.add_device("meter2", PowerMeter, bench=optics.bench.name + "-other", noise_mw=0)
    daemon.connect_device("meter2")
    optics.laser.enable_output()
    assert optics.meter.read_power() == pytest.approx(0.3)
    assert other.read_power() == 0.0


def test_meter_noise_and_averaging(daemon: ld.LabDaemon, bench_name: str) -> None:
    meter = daemon.add_device("meter1", PowerMeter, bench=bench_name, noise_mw=0.01, seed=3)
    daemon.connect_device("meter1")
    single = np.array([meter.read_power() for _ in range(400)])
    meter.set_averaging(100)
    assert meter.get_averaging() == 100
    averaged = np.array([meter.read_power() for _ in range(400)])
    assert 0.007 < single.std() < 0.013
    assert averaged.std() < single.std() / 5
    assert abs(single.mean()) < 0.003
    with pytest.raises(ValueError, match="averaging"):
        meter.set_averaging(0)


def test_meter_streams_through_daemon(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    optics.laser.enable_output()
    collector = Collector(5)
    daemon.start_streaming("meter1", collector, rate_hz=100.0)
    assert collector.enough.wait(10.0)
    daemon.stop_streaming("meter1", timeout=5.0)
    assert wait_until(lambda: not optics.meter.is_streaming())
    assert all(isinstance(v, float) for v in collector.items)
    assert collector.items[0] == pytest.approx(optics.bench.transmission(1550.0))


# -- DAQ ---------------------------------------------------------------------------


def test_daq_streams_one_sample_per_tick(daemon: ld.LabDaemon) -> None:
    daq = daemon.add_device("daq1", StreamingDAQ, channels=3, rate_hz=500.0)
    daemon.connect_device("daq1")
    assert daq.get_channel_count() == 3
    collector = Collector(20)
    daemon.start_streaming("daq1", collector)
    assert collector.enough.wait(10.0)
    assert daq.is_streaming()
    with pytest.raises(RuntimeError, match="streaming"):
        daq.set_rate(100.0)
    daemon.stop_streaming("daq1", timeout=5.0)
    assert wait_until(lambda: not daq.is_streaming())
    sample = collector.items[0]
    assert isinstance(sample, np.ndarray)
    assert sample.shape == (3,)
    assert sample.dtype == np.float64


def test_daq_blocks(daemon: ld.LabDaemon) -> None:
    daemon.add_device("daq1", StreamingDAQ, channels=2, rate_hz=2000.0, block_size=50)
    daemon.connect_device("daq1")
    collector = Collector(3)
    daemon.start_streaming("daq1", collector)
    assert collector.enough.wait(10.0)
    daemon.stop_streaming("daq1", timeout=5.0)
    assert all(block.shape == (50, 2) for block in collector.items)


def test_daq_signals_are_sines_of_different_frequencies(daemon: ld.LabDaemon) -> None:
    daq = daemon.add_device("daq1", StreamingDAQ, channels=4, rate_hz=100.0, noise=0.0)
    daemon.connect_device("daq1")
    samples = np.array([daq.read() for _ in range(100)])  # one second of signal
    t = np.arange(100) / 100.0
    for k in range(4):
        expected = np.sin(2 * np.pi * (k + 1) * t + k * np.pi / 4)
        np.testing.assert_allclose(samples[:, k], expected, atol=1e-9)
    assert daq.get_rate() == 100.0
    daq.set_rate(250.0)
    assert daq.get_rate() == 250.0
    with pytest.raises(ValueError, match="rate"):
        daq.set_rate(0.0)


def test_daq_noise_is_seeded(daemon: ld.LabDaemon) -> None:
    a = daemon.add_device("a", StreamingDAQ, seed=7)
    b = daemon.add_device("b", StreamingDAQ, seed=7)
    daemon.connect_device("a")
    daemon.connect_device("b")
    np.testing.assert_array_equal(a.read(), b.read())


# -- camera ------------------------------------------------------------------------


def test_camera_frames(daemon: ld.LabDaemon) -> None:
    camera = daemon.add_device("camera1", Camera, width=40, height=30, fps=50.0, seed=1)
    daemon.connect_device("camera1")
    frame = camera.snap()
    assert frame.shape == (30, 40)
    assert frame.dtype == np.uint16
    assert camera.get_frame_shape() == (30, 40)
    collector = Collector(3)
    daemon.start_streaming("camera1", collector)
    assert collector.enough.wait(10.0)
    daemon.stop_streaming("camera1", timeout=5.0)
    assert all(f.shape == (30, 40) and f.dtype == np.uint16 for f in collector.items)


def test_camera_exposure_brightens_the_spot(daemon: ld.LabDaemon) -> None:
    camera = daemon.add_device("camera1", Camera, exposure_ms=1.0, seed=2)
    daemon.connect_device("camera1")
    dim = camera.snap()
    camera.set_exposure(20.0)
    assert camera.get_exposure() == 20.0
    bright = camera.snap()
    assert int(dim.max()) < 1000
    assert int(bright.max()) > 4 * int(dim.max())
    # The spot sits on a dark level of about 100 counts.
    assert 50 < float(np.median(dim)) < 200
    with pytest.raises(ValueError, match="exposure"):
        camera.set_exposure(-1.0)


# -- the sweep task ----------------------------------------------------------------


class _RecordingContext(ld.TaskContext):
    """A real TaskContext that keeps every report, for running ``run()`` by hand."""

    def __init__(self, daemon: Any) -> None:
        self.reports: list[dict[str, Any]] = []
        super().__init__(
            daemon,
            "sweep",
            reporter=lambda progress, message, data: self.reports.append(
                {"progress": progress, "message": message, **data}
            ),
        )


def _fake_context(daemon: Any) -> _RecordingContext:
    return _RecordingContext(daemon)


def test_sweep_reports_progress_up_to_one(optics: SimpleNamespace, daemon: ld.LabDaemon) -> None:
    sweep = WavelengthSweep("s", start_nm=1549.0, stop_nm=1550.0, step_nm=0.25, dwell_s=0.001)
    context = _fake_context(daemon)
    result = sweep.run(context)
    assert result["wavelength_nm"] == [1549.0, 1549.25, 1549.5, 1549.75, 1550.0]
    progress = [r["progress"] for r in context.reports]
    assert progress == sorted(progress)
    assert progress[0] == 0.0
    assert progress[-1] == 1.0
    steps = [r for r in context.reports if "wavelength_nm" in r]
    assert [r["wavelength_nm"] for r in steps] == result["wavelength_nm"]
    assert [r["power_mw"] for r in steps] == result["power_mw"]


def test_sweep_downwards_and_uneven_step(optics: SimpleNamespace, daemon: ld.LabDaemon) -> None:
    sweep = WavelengthSweep("s", start_nm=1551.0, stop_nm=1550.0, step_nm=0.3, dwell_s=0.001)
    context = _fake_context(daemon)
    result = sweep.run(context)
    np.testing.assert_allclose(result["wavelength_nm"], [1551.0, 1550.7, 1550.4, 1550.1])
    assert context.reports[-1]["progress"] == 1.0


def test_sweep_parameters() -> None:
    sweep = WavelengthSweep("s", step_nm=0.2)
    assert sweep.get_parameter("step_nm") == 0.2
    assert sweep.get_parameter("laser") == "laser1"
    sweep.set_parameter("dwell_s", 0.5)
    assert sweep.get_parameter("dwell_s") == 0.5
    with pytest.raises(KeyError):
        sweep.set_parameter("start_nm", 1540.0)
    with pytest.raises(KeyError):
        sweep.get_parameter("nope")
    with pytest.raises(ValueError):
        sweep.set_parameter("step_nm", 0.0)
    with pytest.raises(ValueError):
        sweep.set_parameter("dwell_s", -1.0)
    with pytest.raises(ValueError):
        WavelengthSweep("s", step_nm=-0.1)


def test_sweep_pause_and_resume(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    handle = daemon.execute_task(
        "sweep1", WavelengthSweep, start_nm=1545.0, stop_nm=1555.0, step_nm=0.1, dwell_s=0.005
    )
    assert wait_until(lambda: (handle.progress or 0.0) >= 0.05)
    handle.pause()
    assert handle.status == "paused"
    assert handle.is_paused()
    # One step already under way may still finish; after that, progress must stand still.
    paused_at = handle.progress or 0.0
    assert not wait_until(lambda: (handle.progress or 0.0) > paused_at + 0.011, timeout=0.5)
    assert handle.status == "paused"
    assert handle.is_running()
    handle.resume()
    assert handle.status in ("running", "completed")
    result = handle.wait(timeout=30.0)
    assert handle.status == "completed"
    assert handle.progress == 1.0
    assert len(result["wavelength_nm"]) == 101
    assert np.all(np.diff(result["wavelength_nm"]) > 0)  # nothing measured twice


def test_sweep_cancel_returns_partial_result(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    handle = daemon.execute_task(
        "sweep1", WavelengthSweep, start_nm=1545.0, stop_nm=1555.0, step_nm=0.1, dwell_s=0.01
    )
    assert wait_until(lambda: (handle.progress or 0.0) >= 0.03)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError) as caught:
        handle.wait(timeout=10.0)
    assert handle.status == "cancelled"
    partial = caught.value.result
    n = len(partial["wavelength_nm"])
    assert 3 <= n < 101
    assert len(partial["power_mw"]) == n == len(partial["transmission"])
    assert partial["wavelength_nm"][0] == 1545.0


def test_sweep_cancel_while_paused(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    handle = daemon.execute_task(
        "sweep1", WavelengthSweep, start_nm=1545.0, stop_nm=1555.0, step_nm=0.1, dwell_s=0.005
    )
    assert wait_until(lambda: (handle.progress or 0.0) > 0.0)
    handle.pause()
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError) as caught:
        handle.wait(timeout=10.0)
    assert len(caught.value.result["wavelength_nm"]) < 101


def test_sweep_live_step_change(daemon: ld.LabDaemon, optics: SimpleNamespace) -> None:
    handle = daemon.execute_task(
        "sweep1", WavelengthSweep, start_nm=1545.0, stop_nm=1555.0, step_nm=0.1, dwell_s=0.005
    )
    # Three points at the first step, so the change shows as a later, larger step.
    assert wait_until(lambda: (handle.progress or 0.0) >= 0.02)
    handle.pause()
    handle.set_parameter("step_nm", 1.0)
    assert handle.get_parameter("step_nm") == 1.0
    handle.resume()
    result = handle.wait(timeout=30.0)
    steps = np.round(np.diff(result["wavelength_nm"]), 6)
    assert steps[0] == 0.1
    assert steps[-1] == 1.0
    assert set(steps) == {0.1, 1.0}
    assert len(result["wavelength_nm"]) < 60
    assert math.isclose(handle.progress or 0.0, 1.0)


def test_sweep_live_parameter_errors_propagate(
    daemon: ld.LabDaemon, optics: SimpleNamespace
) -> None:
    handle = daemon.execute_task("sweep1", WavelengthSweep, dwell_s=0.01)
    try:
        with pytest.raises(KeyError):
            handle.set_parameter("laser", "laser2")
        with pytest.raises(ValueError):
            handle.set_parameter("dwell_s", 0)
    finally:
        handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(timeout=10.0)


# -- the demo lab --------------------------------------------------------------------


def test_setup_demo(daemon: ld.LabDaemon, bench_name: str) -> None:
    setup_demo(daemon, bench=bench_name)
    assert sorted(daemon.list_devices()) == ["camera1", "daq1", "laser1", "meter1"]
    assert isinstance(daemon.get_device("daq1"), StreamingDAQ)
    assert isinstance(daemon.get_device("camera1"), Camera)
    for device_id in daemon.list_devices():
        assert daemon.get_device(device_id).is_connected()
    handle = daemon.execute_task(
        "demo-sweep", "sweep", start_nm=1549.5, stop_nm=1550.5, step_nm=0.5, dwell_s=0.001
    )
    result = handle.wait(timeout=30.0)
    assert result["wavelength_nm"] == [1549.5, 1550.0, 1550.5]
    assert result["transmission"][1] == pytest.approx(0.3, abs=0.02)


def test_a_second_start_is_refused_and_leaves_the_running_stream_alone() -> None:
    """Used without labd (whose hub never starts a device twice), the sim devices guard it."""
    camera = Camera("cam-direct", fps=20.0, seed=1)
    camera.connect()
    frames: list[Any] = []
    camera.start_streaming(frames.append)
    try:
        with pytest.raises(RuntimeError, match="camera 'cam-direct' is already streaming"):
            camera.start_streaming(frames.append, fps=5.0)
        assert camera.get_fps() == 20.0
        assert camera.is_streaming()
    finally:
        camera.stop_streaming(timeout=5.0)
        camera.disconnect()
    assert not camera.is_streaming()
