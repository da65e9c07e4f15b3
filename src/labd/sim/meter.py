"""A simulated optical power meter reading the light that crosses an ``OpticalBench``.

A reading is the bench's detected power (the sum of laser power * T(wavelength)
over enabled lasers, 0 with no light) plus Gaussian noise of standard deviation
``noise_mw / sqrt(averaging)``: averaging n readings narrows the noise as a
real meter's averaging does. Readings are not clipped at zero, just as a real
meter's offset noise can read slightly negative in the dark.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from labd.exceptions import DeviceNotConnectedError
from labd.sim._stream import LoopStream
from labd.sim.bench import OpticalBench, get_bench

__all__ = ["PowerMeter"]

logger = logging.getLogger(__name__)


class PowerMeter:
    """An optical power meter on a bench, with single reads and a streaming mode."""

    def __init__(
        self,
        device_id: str,
        bench: str = "default",
        noise_mw: float = 0.001,
        averaging: int = 1,
        seed: int | None = None,
    ) -> None:
        if noise_mw < 0:
            raise ValueError(f"noise_mw must be >= 0, got {noise_mw}")
        self.device_id = device_id
        self.bench_name = bench
        self.noise_mw = float(noise_mw)
        self._averaging = self._checked_averaging(averaging)
        self._rng = np.random.default_rng(seed)
        self._bench: OpticalBench | None = None
        self._stream = LoopStream(f"power meter {device_id!r}")

    def connect(self) -> None:
        """Look up the bench; the meter then sees whatever light reaches it."""
        if self._bench is None:
            self._bench = get_bench(self.bench_name)
            logger.info("%s connected on bench %r", self.device_id, self.bench_name)

    def disconnect(self) -> None:
        """Stop streaming and let go of the bench; safe to call twice."""
        self._stream.stop(timeout=2.0)
        if self._bench is not None:
            self._bench = None
            logger.info("%s disconnected", self.device_id)

    def is_connected(self) -> bool:
        """Whether the meter is connected."""
        return self._bench is not None

    def read_power(self) -> float:
        """One power reading in mW: the light on the detector plus noise."""
        return self._measure(self._connected_bench())

    def get_power(self) -> float:
        """Alias of ``read_power``."""
        return self.read_power()

    def set_averaging(self, n: int) -> None:
        """Average ``n`` samples per reading (noise falls as 1/sqrt(n))."""
        self._averaging = self._checked_averaging(n)

    def get_averaging(self) -> int:
        """The number of samples averaged per reading."""
        return self._averaging

    def start_streaming(self, callback: Callable[[float], object], rate_hz: float = 20.0) -> None:
        """Call ``callback(power_mw)`` ``rate_hz`` times a second from a device thread."""
        bench = self._connected_bench()
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self._stream.start(lambda: self._measure(bench), callback, rate_hz, self.device_id)

    def stop_streaming(self, timeout: float | None = None) -> None:
        """Stop the stream; does nothing when not streaming."""
        self._stream.stop(timeout)

    def is_streaming(self) -> bool:
        """Whether the stream is running."""
        return self._stream.running()

    def _measure(self, bench: OpticalBench) -> float:
        signal = bench.detected_power_mw()
        if self.noise_mw == 0.0:
            return signal
        sigma = self.noise_mw / math.sqrt(self._averaging)
        return signal + float(self._rng.normal(0.0, sigma))

    def _connected_bench(self) -> OpticalBench:
        bench = self._bench
        if bench is None:
            raise DeviceNotConnectedError(f"power meter {self.device_id!r} is not connected")
        return bench

    @staticmethod
    def _checked_averaging(n: int) -> int:
        value = int(n)
        if value < 1 or value != n:
            raise ValueError(f"averaging must be a whole number >= 1, got {n}")
        return value
