"""The corpus of driver idioms: each one in-process, over HTTP and through a remote proxy.

Every test states what a user of that idiom gets: a result, or a clear error naming the
device and the method. The two guard forms of ``start_streaming`` are covered through
every streaming path in ``test_guarded_streams.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest
from driverlab import TIMEOUT, Lab
from idioms import Mode, Reading

import labd as ld
from helpers import Collector, wait_until
from labd.server import ServerAPIError


def call(lab: Lab, device_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``POST /devices/{id}/call``; returns the response."""
    body = {"method": method, "args": list(args), "kwargs": kwargs}
    return lab.http.post(f"/devices/{device_id}/call", json=body)


def result(lab: Lab, device_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
    response = call(lab, device_id, method, *args, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]  # type: ignore[no-any-return]


def sse(lab: Lab, device_id: str, n: int, *, until_end: bool = False) -> list[dict[str, Any]]:
    """Events of ``GET /stream/devices/{id}``: ``n`` data, or everything up to stream_end."""
    got: list[dict[str, Any]] = []
    with lab.http.stream("GET", f"/stream/devices/{device_id}") as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            body = orjson.loads(line[6:])
            got.append(body)
            kind = body.get("event", "stream_end" if "run" in body else None)
            if until_end and kind == "stream_end":
                break
            if not until_end and sum(e.get("event") == "device_data" for e in got) >= n:
                break
    return got


def data_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "device_data"]


def through_proxy(lab: Lab, device_id: str, n: int, **kwargs: Any) -> list[Any]:
    """The first ``n`` data a remote proxy's ``start_streaming`` delivers; stops after."""
    remote = lab.api.device(device_id)
    seen = Collector(n)
    remote.start_streaming(seen, **kwargs)
    try:
        assert seen.enough.wait(TIMEOUT), f"{device_id}: {len(seen.items)} of {n} data"
    finally:
        remote.stop_streaming()
    return seen.items


# -- streaming idioms ----------------------------------------------------------------------


def test_first_reading_sent_from_inside_start_streaming(lab: Lab) -> None:
    lab.add("probe", "FirstReadingAtOnce")
    got = Collector(5)
    lab.daemon.start_streaming("probe", got)
    assert got.enough.wait(TIMEOUT)
    assert got.items[:3] == [-1.0, 0.0, 1.0]  # the synchronous one first, in order
    lab.daemon.stop_streaming("probe")

    events = data_of(sse(lab, "probe", 3))  # the SSE subscription starts the device
    assert [e["payload"] for e in events] == [-1.0, 0.0, 1.0]
    assert [e["sequence"] for e in events] == [0, 1, 2]

    assert len(through_proxy(lab, "probe", 3)) >= 3


def test_vendor_sdk_calling_back_on_a_new_thread_per_frame(lab: Lab) -> None:
    lab.add("cam", "VendorCamera", shape=(3, 2))
    frames = Collector(5)
    lab.daemon.start_streaming("cam", frames, exposure_ms=1.0)
    assert frames.enough.wait(TIMEOUT)
    lab.daemon.stop_streaming("cam")
    first = frames.items[0]
    assert isinstance(first, np.ndarray) and first.shape == (3, 2) and first.dtype == np.uint16
    numbers = [int(f[0, 0]) for f in frames.items]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)

    events = data_of(sse(lab, "cam", 4))
    assert all(np.asarray(e["payload"]).shape == (3, 2) for e in events)
    assert [e["sequence"] for e in events] == [0, 1, 2, 3]

    assert np.asarray(through_proxy(lab, "cam", 3, exposure_ms=1.0)[0]).shape == (3, 2)


def test_several_threads_emitting_into_one_stream(lab: Lab, tmp_path: Any) -> None:
    lab.add("daq", "MultiChannelDAQ", channels=3)
    path = tmp_path / "daq.h5"
    with lab.daemon.record("daq", path) as recording:
        assert wait_until(lambda: recording.recorded >= 90, timeout=TIMEOUT)
    loaded = ld.load_recording(path)
    sequence = np.asarray(loaded["sequence"])
    assert np.all(np.diff(sequence) == 1)  # one numbering, no duplicates, no gaps
    assert set(np.asarray(loaded["data"]["channel"]).tolist()) == {0, 1, 2}  # dict columns

    events = data_of(sse(lab, "daq", 60))
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + 60))
    assert {e["payload"]["channel"] for e in events} == {0, 1, 2}

    assert {d["channel"] for d in through_proxy(lab, "daq", 30)} == {0, 1, 2}


@pytest.mark.parametrize(
    ("kind", "param", "count"), [("FiniteScan", "points", 20), ("FlakySensor", "good", 15)]
)
def test_a_stream_that_ends_by_itself(lab: Lab, kind: str, param: str, count: int) -> None:
    """After ``count`` data the device's loop returns (done, or broken by a read error)."""
    lab.add("s", kind, **{param: count})
    got = Collector(count)
    sub = lab.daemon.start_streaming("s", got, on_end=got.on_end)
    assert got.ended.wait(TIMEOUT) and got.end_error is None
    assert got.items == list(range(count)) and not sub.active
    assert lab.daemon.device_info("s")["streaming"] is False

    events = sse(lab, "s", 0, until_end=True)  # subscribing starts it again
    assert [e["payload"] for e in data_of(events)] == list(range(count))
    assert "run" in events[-1] and events[-1]["device_id"] == "s"  # the stream_end event


@pytest.mark.parametrize("kind", ["FiniteScan", "FlakySensor"])
def test_a_stream_that_ends_by_itself_through_a_proxy(lab: Lab, kind: str) -> None:
    param = "points" if kind == "FiniteScan" else "good"
    lab.add("s", kind, **{param: 2000})  # long enough for the proxy's SSE to connect first
    remote = lab.api.device("s")
    seen = Collector(1)
    subscription = remote.start_streaming(seen)
    try:
        assert subscription.ended.wait(TIMEOUT)
        assert seen.items and seen.items[-1] == 1999
        assert remote.is_streaming() is False
    finally:
        subscription.close()


def test_a_device_restarting_its_own_stream_keeps_its_subscribers(lab: Lab) -> None:
    dev = lab.add("link", "SelfHealingLink", drop_after=10)
    got = Collector(30)
    sub = lab.daemon.start_streaming("link", got)
    assert got.enough.wait(TIMEOUT)
    assert dev.restarts == 1 and sub.active
    assert got.items[:12] == [*range(10), 0, 1]  # its new loop counts from 0 again
    lab.daemon.stop_streaming("link")

    dev.restarts = 0
    events = data_of(sse(lab, "link", 30))
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(30))  # one run, numbered straight through the restart
    assert {e["run"] for e in events} == {events[0]["run"]}
    assert dev.restarts == 1

    dev.restarts = 0
    remote = lab.api.device("link")
    seen = Collector(1)
    remote.start_streaming(seen)
    try:
        assert wait_until(lambda: dev.restarts == 1, timeout=TIMEOUT)
        after = len(seen.items)
        assert wait_until(lambda: len(seen.items) >= after + 10, timeout=TIMEOUT)
    finally:
        remote.stop_streaming()


def test_start_streaming_with_positional_and_keyword_settings(lab: Lab) -> None:
    dev = lab.add("dig", "Digitizer")
    got = Collector(3)
    dev.start_streaming(got, 400.0, (0, 2), mode="burst")
    assert got.enough.wait(TIMEOUT)
    assert dev.settings == {"rate_hz": 400.0, "channels": [0, 2], "mode": "burst"}
    with pytest.raises(ld.DeviceArgumentError, match=r"dig\.start_streaming"):
        lab.daemon.start_streaming("dig", got, rate=1.0)  # a wrong name: refused before start
    dev.stop_streaming()

    bad = lab.http.post("/devices/dig/streaming/start", json={"kwargs": {"speed": 5}})
    assert "dig.start_streaming" in error(bad, 400)["message"]
    missing = lab.http.get("/stream/devices/dig")  # no kwargs: rate_hz is missing
    assert missing.status_code == 400 and "rate_hz" in missing.json()["error"]["message"]
    started = lab.http.post(
        "/devices/dig/streaming/start",
        json={"kwargs": {"rate_hz": 300, "channels": [1], "mode": "single"}},
    )
    assert started.status_code == 200, started.text
    assert dev.settings == {"rate_hz": 300, "channels": [1], "mode": "single"}
    lab.http.post("/devices/dig/streaming/stop")

    assert through_proxy(lab, "dig", 3, rate_hz=200, mode="burst")[-1]["mode"] == "burst"


def test_stop_streaming_without_timeout_and_disconnect_stopping_its_stream(lab: Lab) -> None:
    dev = lab.add("old", "OldStyleMeter")
    got = Collector(5)
    lab.daemon.start_streaming("old", got)
    assert got.enough.wait(TIMEOUT)
    lab.daemon.stop_streaming("old", timeout=2.0)  # its stop takes no timeout
    assert not dev.is_streaming()

    watcher = threading.Thread(target=lambda: sse(lab, "old", 0, until_end=True), daemon=True)
    lab.http.post("/devices/old/streaming/start", json={"kwargs": {}})
    watcher.start()
    assert wait_until(lambda: dev.get_samples() > 10, timeout=TIMEOUT)
    response = lab.http.post("/devices/old/disconnect")
    assert response.status_code == 200 and response.json()["connected"] is False
    assert response.json()["streaming"] is False
    watcher.join(TIMEOUT)
    assert not watcher.is_alive()  # the viewer got its stream_end

    remote = lab.api.device("old")
    remote.connect()
    seen = Collector(3)
    remote.start_streaming(seen)
    assert seen.enough.wait(TIMEOUT)
    remote.disconnect()  # stops the stream first, then the device's disconnect()
    assert remote.is_streaming() is False and not dev.connected


# -- attributes, classes and return types ---------------------------------------------------


def test_properties_and_plain_attributes(lab: Lab) -> None:
    dev = lab.add("psu", "PowerSupply", port="COM7")
    assert dev.port == "COM7" and dev.voltage == 0.0
    dev.voltage = 3.0  # a property setter, as without labd
    assert dev.get_voltage() == 3.0 and dev.output_power(2.0) == 6.0

    assert result(lab, "psu", "set_voltage", 5.0) is None
    assert result(lab, "psu", "output_power", 0.5) == 2.5  # a public method calling another
    for attribute in ("voltage", "port", "max_current"):
        err = error(call(lab, "psu", attribute), 400)
        assert f"device 'psu' has no public method {attribute!r}" in err["message"]

    remote = lab.api.device("psu")
    assert remote.get_voltage() == 5.0
    with pytest.raises(AttributeError, match="'psu' has no public method 'voltage'"):
        remote.voltage  # noqa: B018


def test_a_driver_built_on_getattr(lab: Lab) -> None:
    dev = lab.add("sdk", "SDKWrapper")
    assert dev.get_serial() == "SN-4711" and dev.describe() == "camera SN-4711"
    assert dev.device_id == "sdk"

    assert result(lab, "sdk", "describe") == "camera SN-4711"
    err = error(call(lab, "sdk", "get_serial"), 400)  # only what the class defines is served
    assert "device 'sdk' has no public method 'get_serial'" in err["message"]
    names = [m["name"] for m in lab.http.get("/devices/sdk/methods").json()["methods"]]
    assert names == ["describe"]

    remote = lab.api.device("sdk")
    assert remote.describe() == "camera SN-4711"
    with pytest.raises(AttributeError, match="get_serial"):
        remote.get_serial()


def test_a_subclass_of_another_driver(lab: Lab) -> None:
    dev = lab.add("mk2", "TunableLaserMk2")
    assert dev.set_wavelength(1550.04) == 1550.0
    with pytest.raises(ValueError, match="out of range"):
        dev.set_wavelength(1700)
    assert result(lab, "mk2", "set_wavelength", 1560.26) == 1560.3
    assert result(lab, "mk2", "get_wavelength") == 1560.3  # inherited, still served
    err = error(call(lab, "mk2", "set_wavelength", 1400), 500)
    assert err["type"] == "ValueError" and err["origin"] == "device"
    assert err["context"] == {"device_id": "mk2", "method": "set_wavelength"}
    remote = lab.api.device("mk2")
    assert remote.sweep_points(1500.0, 1600.0, n=3) == [1500.0, 1550.0, 1600.0]
    with pytest.raises(ValueError, match="out of range"):
        remote.set_wavelength(1400)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("SlotsThermometer", "__slots__"),
        ("AsyncDriver", "method 'read' is 'async def'"),
        ("GeneratorDriver", "method 'readings' is a generator"),
    ],
)
def test_classes_labd_cannot_adapt_are_refused_at_add_device(
    lab: Lab, kind: str, reason: str
) -> None:
    with pytest.raises(ld.DeviceConfigurationError, match=rf"device 'x' \({kind}\)") as caught:
        lab.daemon.add_device("x", kind)
    assert reason in str(caught.value)
    assert lab.daemon.list_devices() == []  # nothing half-built is left behind

    body = {"device_id": "x", "device_type": kind, "params": {}}
    err = error(lab.http.post("/devices", json=body), 400)
    assert reason in err["message"] and "'x'" in err["message"]

    with pytest.raises(ServerAPIError) as remote:
        lab.api.add_device("x", kind)
    assert remote.value.status_code == 400 and reason in str(remote.value)
    assert lab.api.list_devices() == []


def test_slots_that_keep_a_dict_are_adapted(lab: Lab) -> None:
    dev = lab.add("slots", "SlotsWithDict", port="COM9")
    assert dev.get_port() == "COM9" and hasattr(dev, "_ld_lock")
    assert result(lab, "slots", "get_port") == "COM9"
    assert lab.api.device("slots").get_port() == "COM9"


def test_a_custom_setattr_never_sees_labds_parts(lab: Lab) -> None:
    dev = lab.add("mirror", "SettingsMirror")
    assert dev.written == []  # _ld_lock and the wrappers bypass its __setattr__
    assert dev.set_gain(2) == 2 and dev.written == ["gain"]
    assert result(lab, "mirror", "set_gain", 3) == 3
    assert lab.api.device("mirror").set_gain(4) == 4
    assert dev.written == ["gain", "gain", "gain"]


def test_methods_returning_what_drivers_return(lab: Lab) -> None:
    dev = lab.add("odd", "Oddities")
    assert type(dev.numpy_scalar()) is np.float64 and dev.raw_block().startswith(b"#1")
    assert dev.mode() is Mode.FAST and dev.reading() == Reading(1.25, "mW")

    expected = {
        "numpy_scalar": 1.5,
        "numpy_int": 7,
        "trace": [0.0, 1.0, 2.0, 3.0],
        "impedance": {"real": 50.0, "imag": -2.5},
        "raw_block": repr(b"#14\x01\x02\x03\x04"),
        "timestamp": "2026-12-04T12:00:00+00:00",
        "mode": "fast",
        "reading": {"value": 1.25, "unit": "mW"},
        "nothing": None,
    }
    remote = lab.api.device("odd")
    for method, value in expected.items():
        assert result(lab, "odd", method) == value, method
        assert getattr(remote, method)() == value, method


def test_keyword_only_and_variadic_parameters(lab: Lab) -> None:
    dev = lab.add("sig", "Signatures")
    assert dev.configure(gain=2) == {"gain": 2, "offset": 0.0}

    assert result(lab, "sig", "configure", gain=2, offset=0.5) == {"gain": 2, "offset": 0.5}
    err = error(call(lab, "sig", "configure", 2), 400)  # keyword-only given by position
    assert "sig.configure" in err["message"]
    err = error(call(lab, "sig", "configure"), 400)
    assert "gain" in err["message"]
    assert result(lab, "sig", "average", 1, 2, 3, 6) == 3.0
    assert result(lab, "sig", "apply", b=2, a=1) == {"a": 1, "b": 2}
    assert result(lab, "sig", "list_ports") == ["COM1", "COM3"]  # a staticmethod
    assert result(lab, "sig", "model") == "Signatures"  # a classmethod

    remote = lab.api.device("sig")
    assert remote.configure(gain=1) == {"gain": 1, "offset": 0.0}
    assert remote.average(2, 4) == 3.0
    assert remote.apply(x=1) == {"x": 1}
    with pytest.raises(TypeError, match="gain"):
        remote.configure()


def test_literal_and_enum_parameters_offer_and_take_their_choices(lab: Lab) -> None:
    dev = lab.add("sig", "Signatures")
    assert dev.set_mode(Mode.PRECISE) == "PRECISE"

    methods = {m["name"]: m for m in lab.http.get("/devices/sig/methods").json()["methods"]}
    (trigger,) = methods["set_trigger"]["parameters"]
    assert trigger["choices"] == ["internal", "external", "line"]
    (mode,) = methods["set_mode"]["parameters"]
    assert mode["choices"] == ["fast", "precise"] and mode["annotation"] == "Mode"
    assert methods["average"]["parameters"][0]["choices"] is None

    assert result(lab, "sig", "set_mode", "fast") == "FAST"  # by value: the device gets Mode
    assert result(lab, "sig", "set_mode", mode="PRECISE") == "PRECISE"  # or by name
    assert dev.mode is Mode.PRECISE
    err = error(call(lab, "sig", "set_mode", "turbo"), 400)
    assert "sig.set_mode" in err["message"] and "'fast'" in err["message"]
    assert dev.mode is Mode.PRECISE  # refused before the device was touched
    assert result(lab, "sig", "set_trigger", "external") == "external"

    remote = lab.api.device("sig")
    assert remote.set_mode("fast") == "FAST"
    with pytest.raises(TypeError, match="turbo"):
        remote.set_mode("turbo")
