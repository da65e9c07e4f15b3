"""A simulated multi-channel streaming DAQ.

Channel k (0-based) carries a sine of amplitude 1 V at (k + 1) Hz, phase
k*pi/4, plus white Gaussian noise of standard deviation ``noise`` V. Time is
the DAQ's own sample clock (sample index / ``rate_hz``), so waveforms stay
smooth even when the host thread is late.

``rate_hz`` is the sample rate. With ``block_size`` 1 each tick emits one
sample per channel (a float64 array of shape ``(channels,)``) at ``rate_hz``
ticks per second; with a larger block each tick emits a ``(block_size,
channels)`` array and the tick rate is ``rate_hz / block_size``, like a real
DAQ that hands over buffers.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from labd.exceptions import DeviceNotConnectedError
from labd.sim._stream import LoopStream

__all__ = ["StreamingDAQ"]

logger = logging.getLogger(__name__)

_MAX_RATE_HZ = 1_000_000.0


class StreamingDAQ:
    """A DAQ with ``channels`` analogue inputs, streamed sample by sample or in blocks."""

    def __init__(
        self,
        device_id: str,
        channels: int = 4,
        rate_hz: float = 1000.0,
        block_size: int = 1,
        noise: float = 0.05,
        seed: int | None = None,
    ) -> None:
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a whole number >= 1, got {channels}")
        if int(block_size) != block_size or block_size < 1:
            raise ValueError(f"block_size must be a whole number >= 1, got {block_size}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.device_id = device_id
        self.channels = int(channels)
        self.block_size = int(block_size)
        self.noise = float(noise)
        self._rate_hz = self._checked_rate(rate_hz)
        self._rng = np.random.default_rng(seed)
        k = np.arange(self.channels, dtype=np.float64)
        self._omega = 2.0 * math.pi * (k + 1.0)
        self._phase = k * (math.pi / 4.0)
        self._block_offsets = np.arange(self.block_size, dtype=np.float64)[:, np.newaxis]
        # The sample counter is shared by the stream thread and read().
        self._clock_lock = threading.Lock()
        self._next_sample = 0
        self._connected = False
        self._stream = LoopStream(f"DAQ {device_id!r}")

    def connect(self) -> None:
        """Open the simulated acquisition card and restart its sample clock."""
        if not self._connected:
            with self._clock_lock:
                self._next_sample = 0
            self._connected = True
            logger.info("%s connected (%d channels)", self.device_id, self.channels)

    def disconnect(self) -> None:
        """Stop streaming and close the card; safe to call twice."""
        self._stream.stop(timeout=2.0)
        if self._connected:
            self._connected = False
            logger.info("%s disconnected", self.device_id)

    def is_connected(self) -> bool:
        """Whether the DAQ is connected."""
        return self._connected

    def read(self) -> npt.NDArray[np.float64]:
        """One sample of every channel, shape ``(channels,)``."""
        self._require_connected()
        return self._sample_one()

    def get_channel_count(self) -> int:
        """The number of channels."""
        return self.channels

    def get_rate(self) -> float:
        """The sample rate in Hz."""
        return self._rate_hz

    def set_rate(self, hz: float) -> None:
        """Change the sample rate; refused while streaming."""
        if self.is_streaming():
            raise RuntimeError(f"DAQ {self.device_id!r} is streaming: stop it before set_rate")
        self._rate_hz = self._checked_rate(hz)

    def start_streaming(
        self, callback: Callable[[npt.NDArray[np.float64]], object], rate_hz: float | None = None
    ) -> None:
        """Stream samples (or blocks) to ``callback``; ``rate_hz`` overrides the sample rate."""
        self._require_connected()
        self._stream.check_idle()
        if rate_hz is not None:
            self._rate_hz = self._checked_rate(rate_hz)
        acquire = self._sample_one if self.block_size == 1 else self._sample_block
        self._stream.start(acquire, callback, self._rate_hz / self.block_size, self.device_id)

    def stop_streaming(self, timeout: float | None = None) -> None:
        """Stop the stream; does nothing when not streaming."""
        self._stream.stop(timeout)

    def is_streaming(self) -> bool:
        """Whether the stream is running."""
        return self._stream.running()

    def _sample_one(self) -> npt.NDArray[np.float64]:
        with self._clock_lock:
            n = self._next_sample
            self._next_sample = n + 1
        t = n / self._rate_hz
        data = np.sin(self._omega * t + self._phase)
        if self.noise:
            data += self.noise * self._rng.standard_normal(self.channels)
        return data

    def _sample_block(self) -> npt.NDArray[np.float64]:
        with self._clock_lock:
            n = self._next_sample
            self._next_sample = n + self.block_size
        t = (self._block_offsets + n) / self._rate_hz
        data = np.sin(t * self._omega + self._phase)
        if self.noise:
            data += self.noise * self._rng.standard_normal(data.shape)
        return data

    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"DAQ {self.device_id!r} is not connected")

    @staticmethod
    def _checked_rate(hz: float) -> float:
        value = float(hz)
        if not (math.isfinite(value) and 0.0 < value <= _MAX_RATE_HZ):
            raise ValueError(f"rate must be within (0, {_MAX_RATE_HZ:g}] Hz, got {hz}")
        return value
