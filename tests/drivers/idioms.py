"""Device classes written the ways instrument drivers are written, for labd's driver tests.

Each class is plain Python, as its author would write it without labd in mind: guards at
the top of ``start_streaming``, self-calls, vendor-SDK threads, odd return types. None of
them knows labd's internals; the tests assert what a user of each gets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

# -- streaming idioms ----------------------------------------------------------------------


class GuardedSource:
    """The usual guard: starting a stream that runs already does nothing."""

    def __init__(self, device_id, rate_hz=500.0):
        self.rate_hz = rate_hz
        self._thread = None
        self._stop = threading.Event()
        self.starts = 0

    def start_streaming(self, callback, **kwargs):
        if self.is_streaming():
            return
        self.starts += 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
        self._thread.start()

    def stop_streaming(self, timeout=None):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self):
        return self._thread is not None and self._thread.is_alive()

    def _loop(self, callback):
        n = 0
        while not self._stop.wait(1.0 / self.rate_hz):
            callback(float(n))
            n += 1


class StrictSource(GuardedSource):
    """The other form of the guard: starting twice is a mistake and says so."""

    def start_streaming(self, callback, **kwargs):
        if self.is_streaming():
            raise RuntimeError("already streaming")
        self.starts += 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
        self._thread.start()


class FirstReadingAtOnce(GuardedSource):
    """Sends the current reading from inside ``start_streaming``, then keeps streaming."""

    def start_streaming(self, callback, **kwargs):
        if self.is_streaming():
            return
        callback(-1.0)  # the reading at start, before the loop runs
        super().start_streaming(callback, **kwargs)


class VendorCamera:
    """An SDK that calls back on a fresh thread for every frame (as some camera SDKs do)."""

    def __init__(self, device_id, shape=(4, 4)):
        self.shape = tuple(shape)
        self._acquiring = False
        self._on_frame = None
        self._frame_no = 0
        self._pending = None

    def start_streaming(self, callback, exposure_ms=2.0):
        if self._acquiring:
            return
        self._on_frame = callback
        self._acquiring = True
        self._schedule(exposure_ms / 1000.0)

    def _schedule(self, delay):
        self._pending = threading.Timer(delay, self._frame_ready, args=(delay,))
        self._pending.daemon = True
        self._pending.start()

    def _frame_ready(self, delay):
        if not self._acquiring:
            return
        self._frame_no += 1
        self._on_frame(np.full(self.shape, self._frame_no, dtype=np.uint16))
        self._schedule(delay)

    def stop_streaming(self, timeout=None):
        self._acquiring = False
        pending = self._pending
        if pending is not None:
            pending.cancel()
            pending.join(timeout)

    def is_streaming(self):
        return self._acquiring


class MultiChannelDAQ:
    """One acquisition thread per channel, all calling the same callback."""

    def __init__(self, device_id, channels=3):
        self.channels = channels
        self._threads = []
        self._stop = threading.Event()

    def start_streaming(self, callback, rate_hz=300.0):
        if self.is_streaming():
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._acquire, args=(ch, callback, rate_hz), daemon=True)
            for ch in range(self.channels)
        ]
        for t in self._threads:
            t.start()

    def _acquire(self, channel, callback, rate_hz):
        n = 0
        while not self._stop.wait(1.0 / rate_hz):
            callback({"channel": channel, "n": n})
            n += 1

    def stop_streaming(self, timeout=None):
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def is_streaming(self):
        return any(t.is_alive() for t in self._threads)


class FiniteScan:
    """A scan that streams ``points`` values and then ends by itself."""

    def __init__(self, device_id, points=20):
        self.points = points
        self._thread = None

    def start_streaming(self, callback):
        if self.is_streaming():
            return
        self._thread = threading.Thread(target=self._scan, args=(callback,), daemon=True)
        self._thread.start()

    def _scan(self, callback):
        for i in range(self.points):
            callback(i)
            time.sleep(0.001)

    def stop_streaming(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self):
        return self._thread is not None and self._thread.is_alive()


class FlakySensor(GuardedSource):
    """Its loop breaks on a read error after ``good`` readings, as the seed's loops do."""

    def __init__(self, device_id, good=15):
        super().__init__(device_id)
        self.good = good

    def _loop(self, callback):
        n = 0
        try:
            while not self._stop.wait(0.001):
                if n >= self.good:
                    raise OSError("sensor read failed")
                callback(n)
                n += 1
        except OSError as exc:
            print(f"Streaming error: {exc}")


class SelfHealingLink(GuardedSource):
    """On a link error its loop restarts the stream by itself, on a helper thread."""

    def __init__(self, device_id, drop_after=10):
        super().__init__(device_id)
        self.drop_after = drop_after
        self.restarts = 0
        self._callback = None

    def start_streaming(self, callback, **kwargs):
        if self.is_streaming():
            return
        self._callback = callback
        super().start_streaming(callback, **kwargs)

    def _loop(self, callback):
        n = 0
        while not self._stop.wait(0.001):
            callback(n)
            n += 1
            if n == self.drop_after and self.restarts == 0:
                threading.Thread(target=self._restart, daemon=True).start()
                return

    def _restart(self):
        self.stop_streaming()  # the old loop has returned: this just tidies up
        self.restarts += 1
        self.start_streaming(self._callback)


class Digitizer:
    """``start_streaming`` with positional and keyword-only settings of its own."""

    def __init__(self, device_id):
        self.settings = None
        self._thread = None
        self._stop = threading.Event()

    def start_streaming(self, callback, rate_hz, channels=(0,), *, mode="continuous"):
        if self._thread is not None and self._thread.is_alive():
            return
        self.settings = {"rate_hz": rate_hz, "channels": list(channels), "mode": mode}
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(callback, float(rate_hz)), daemon=True
        )
        self._thread.start()

    def _loop(self, callback, rate_hz):
        while not self._stop.wait(1.0 / rate_hz):
            callback(dict(self.settings))

    def stop_streaming(self, timeout=None):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self):
        return self._thread is not None and self._thread.is_alive()


class OldStyleMeter:
    """``stop_streaming()`` takes no timeout; ``disconnect`` stops its own stream (seed VISA)."""

    def __init__(self, device_id):
        self.connected = False
        self.samples = 0
        self._thread = None
        self._stop = threading.Event()

    def connect(self):
        self.connected = True

    def disconnect(self):
        if self.is_streaming():
            self.stop_streaming()
        self.connected = False

    def start_streaming(self, callback):
        if not self.connected:
            raise RuntimeError("Device not connected")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(callback,), daemon=True)
        self._thread.start()

    def _loop(self, callback):
        while not self._stop.wait(0.002):
            with self._ld_lock:  # shared state, as the seed recommends
                self.samples += 1
                value = self.samples
            callback(value)

    def stop_streaming(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def is_streaming(self):
        return self._thread is not None and self._thread.is_alive()

    def get_samples(self):
        return self.samples


# -- attribute and class idioms --------------------------------------------------------------


class PowerSupply:
    """Settings as a property and plain attributes, next to ordinary methods."""

    def __init__(self, device_id, port="COM3", max_current=2.0):
        self.port = port
        self.max_current = max_current
        self._voltage = 0.0

    @property
    def voltage(self):
        return self._voltage

    @voltage.setter
    def voltage(self, value):
        self._voltage = float(value)

    def set_voltage(self, volts: float) -> None:
        self.voltage = volts

    def get_voltage(self) -> float:
        return self.voltage

    def output_power(self, current: float) -> float:
        """Power at ``current`` A: calls its own public getter."""
        return self.get_voltage() * current


class _VendorSDK:
    """Stands in for a vendor's Python SDK object."""

    def __init__(self):
        self.exposure = 10.0

    def get_serial(self):
        return "SN-4711"

    def set_exposure(self, ms):
        self.exposure = float(ms)
        return self.exposure


class SDKWrapper:
    """A thin driver that forwards everything it does not define to the vendor SDK."""

    def __init__(self, device_id):
        self._sdk = _VendorSDK()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._sdk, name)

    def describe(self):
        return f"camera {self.get_serial()}"


class Laser:
    def __init__(self, device_id, wavelength_nm=1550.0):
        self.wavelength_nm = wavelength_nm

    def set_wavelength(self, nm):
        if not 1500 <= nm <= 1600:
            raise ValueError(f"wavelength {nm} nm out of range")
        self.wavelength_nm = nm

    def get_wavelength(self):
        return self.wavelength_nm


class TunableLaserMk2(Laser):
    """A subclass of another driver, extending one method through ``super()``."""

    def set_wavelength(self, nm):
        super().set_wavelength(round(nm, 1))
        return self.get_wavelength()

    def sweep_points(self, start, stop, n=3):
        return [start + (stop - start) * i / (n - 1) for i in range(n)]


class SlotsThermometer:
    """Memory-conscious style: ``__slots__`` and no ``__dict__``."""

    __slots__ = ("_value", "port")

    def __init__(self, device_id, port="COM1"):
        self.port = port
        self._value = 293.15

    def get_temperature(self):
        return self._value


class SlotsWithDict:
    """``__slots__`` that keep a ``__dict__``: labd can adapt it."""

    __slots__ = ("__dict__", "port")

    def __init__(self, device_id, port="COM2"):
        self.port = port

    def get_port(self):
        return self.port


class SettingsMirror:
    """Forwards every public attribute it is given to the instrument (some drivers do)."""

    def __init__(self, device_id):
        object.__setattr__(self, "written", [])

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            self.written.append(name)  # would be a SCPI write on real hardware
        object.__setattr__(self, name, value)

    def set_gain(self, gain):
        self.gain = gain
        return gain


class Mode(enum.Enum):
    FAST = "fast"
    PRECISE = "precise"


@dataclasses.dataclass
class Reading:
    value: float
    unit: str


class Oddities:
    """Methods returning what real drivers return."""

    def __init__(self, device_id):
        pass

    def numpy_scalar(self):
        return np.float64(1.5)

    def numpy_int(self):
        return np.int32(7)

    def trace(self, n=4):
        return np.arange(n, dtype=np.float32)

    def impedance(self):
        return complex(50.0, -2.5)

    def raw_block(self):
        return b"#14\x01\x02\x03\x04"

    def timestamp(self):
        return dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)

    def mode(self):
        return Mode.FAST

    def reading(self):
        return Reading(1.25, "mW")

    def nothing(self):
        return None


class Signatures:
    """Keyword-only, variadic, Literal- and Enum-annotated parameters."""

    def __init__(self, device_id):
        self.mode = Mode.FAST
        self.trigger = "internal"

    def configure(self, *, gain, offset=0.0):
        return {"gain": gain, "offset": offset}

    def average(self, *values):
        return sum(values) / len(values)

    def apply(self, **settings):
        return dict(sorted(settings.items()))

    def set_trigger(self, source: Literal["internal", "external", "line"]) -> str:
        self.trigger = source
        return source

    def set_mode(self, mode: Mode) -> str:
        if not isinstance(mode, Mode):
            raise TypeError(f"mode must be a Mode, not {type(mode).__name__}")
        self.mode = mode
        return mode.name

    @staticmethod
    def list_ports() -> list[str]:
        return ["COM1", "COM3"]

    @classmethod
    def model(cls) -> str:
        return cls.__name__


class AsyncDriver:
    """Written for asyncio."""

    def __init__(self, device_id):
        pass

    async def read(self):
        return 1.0


class GeneratorDriver:
    """A public generator method."""

    def __init__(self, device_id):
        pass

    def readings(self, n=3):
        yield from range(n)


STREAMING: dict[str, type] = {
    "GuardedSource": GuardedSource,
    "StrictSource": StrictSource,
    "FirstReadingAtOnce": FirstReadingAtOnce,
    "VendorCamera": VendorCamera,
    "MultiChannelDAQ": MultiChannelDAQ,
    "FiniteScan": FiniteScan,
    "FlakySensor": FlakySensor,
    "SelfHealingLink": SelfHealingLink,
    "Digitizer": Digitizer,
    "OldStyleMeter": OldStyleMeter,
}

OTHERS: dict[str, type] = {
    "PowerSupply": PowerSupply,
    "SDKWrapper": SDKWrapper,
    "TunableLaserMk2": TunableLaserMk2,
    "SlotsThermometer": SlotsThermometer,
    "SlotsWithDict": SlotsWithDict,
    "SettingsMirror": SettingsMirror,
    "Oddities": Oddities,
    "Signatures": Signatures,
    "AsyncDriver": AsyncDriver,
    "GeneratorDriver": GeneratorDriver,
}

ALL: dict[str, type] = {**STREAMING, **OTHERS}

Callback = Callable[[Any], None]
