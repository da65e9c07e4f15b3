"""A simulated camera looking at a drifting laser spot.

Each frame is a ``(height, width)`` uint16 image: a dark level of 100 counts,
plus a Gaussian spot (sigma = 1/12 of the width) whose peak is 400 counts per ms of
exposure, plus noise (read noise of 4 counts and shot noise sqrt(signal)), clipped
to the 16-bit range. The spot wanders on a slow Lissajous path (0.05 Hz
across, 0.07 Hz down) in the camera's own time, frame index / ``fps``.
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

__all__ = ["Camera"]

logger = logging.getLogger(__name__)

_DARK_COUNTS = 100.0
_COUNTS_PER_MS = 400.0
_READ_NOISE = 4.0
_FULL_SCALE = 65535.0


class Camera:
    """A camera with snap and a streaming (video) mode producing uint16 frames."""

    def __init__(
        self,
        device_id: str,
        width: int = 64,
        height: int = 48,
        fps: float = 10.0,
        exposure_ms: float = 10.0,
        seed: int | None = None,
    ) -> None:
        for label, value in (("width", width), ("height", height)):
            if int(value) != value or value < 4:
                raise ValueError(f"{label} must be a whole number >= 4, got {value}")
        self.device_id = device_id
        self.width = int(width)
        self.height = int(height)
        self._fps = self._checked_fps(fps)
        self._exposure_ms = self._checked_exposure(exposure_ms)
        self._rng = np.random.default_rng(seed)
        self._x = np.arange(self.width, dtype=np.float64)[np.newaxis, :]
        self._y = np.arange(self.height, dtype=np.float64)[:, np.newaxis]
        self._sigma = self.width / 12.0
        self._frame_lock = threading.Lock()
        self._frame_index = 0
        self._connected = False
        self._stream = LoopStream(f"camera {device_id!r}")

    def connect(self) -> None:
        """Open the simulated camera."""
        if not self._connected:
            self._connected = True
            logger.info("%s connected (%dx%d)", self.device_id, self.width, self.height)

    def disconnect(self) -> None:
        """Stop streaming and close the camera; safe to call twice."""
        self._stream.stop(timeout=2.0)
        if self._connected:
            self._connected = False
            logger.info("%s disconnected", self.device_id)

    def is_connected(self) -> bool:
        """Whether the camera is connected."""
        return self._connected

    def snap(self) -> npt.NDArray[np.uint16]:
        """Acquire one frame, shape ``(height, width)``, dtype uint16."""
        self._require_connected()
        return self._frame()

    def set_exposure(self, ms: float) -> None:
        """Set the exposure time in ms (brighter spot, same noise floor)."""
        self._exposure_ms = self._checked_exposure(ms)

    def get_exposure(self) -> float:
        """The exposure time in ms."""
        return self._exposure_ms

    def get_fps(self) -> float:
        """The streaming frame rate in frames per second."""
        return self._fps

    def get_frame_shape(self) -> tuple[int, int]:
        """The frame shape ``(height, width)``."""
        return (self.height, self.width)

    def start_streaming(
        self, callback: Callable[[npt.NDArray[np.uint16]], object], fps: float | None = None
    ) -> None:
        """Send frames to ``callback`` ``fps`` times a second (default: the configured fps)."""
        self._require_connected()
        self._stream.check_idle()
        if fps is not None:
            self._fps = self._checked_fps(fps)
        self._stream.start(self._frame, callback, self._fps, self.device_id)

    def stop_streaming(self, timeout: float | None = None) -> None:
        """Stop the stream; does nothing when not streaming."""
        self._stream.stop(timeout)

    def is_streaming(self) -> bool:
        """Whether the stream is running."""
        return self._stream.running()

    def _frame(self) -> npt.NDArray[np.uint16]:
        with self._frame_lock:
            index = self._frame_index
            self._frame_index = index + 1
        t = index / self._fps
        cx = self.width * (0.5 + 0.25 * math.sin(2.0 * math.pi * 0.05 * t))
        cy = self.height * (0.5 + 0.25 * math.sin(2.0 * math.pi * 0.07 * t + 1.0))
        peak = _COUNTS_PER_MS * self._exposure_ms
        two_s2 = 2.0 * self._sigma * self._sigma
        # The spot is separable: an outer product of a row and a column profile.
        row = np.exp(-((self._x - cx) ** 2) / two_s2)
        column = np.exp(-((self._y - cy) ** 2) / two_s2)
        signal = peak * (column * row) + _DARK_COUNTS
        sigma = np.sqrt(signal + _READ_NOISE * _READ_NOISE)
        noise = sigma * self._rng.standard_normal(signal.shape)
        return np.clip(signal + noise, 0.0, _FULL_SCALE).astype(np.uint16)

    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"camera {self.device_id!r} is not connected")

    @staticmethod
    def _checked_fps(fps: float) -> float:
        value = float(fps)
        if not (math.isfinite(value) and 0.0 < value <= 1000.0):
            raise ValueError(f"fps must be within (0, 1000], got {fps}")
        return value

    @staticmethod
    def _checked_exposure(ms: float) -> float:
        value = float(ms)
        if not (math.isfinite(value) and 0.0 < value <= 10_000.0):
            raise ValueError(f"exposure must be within (0, 10000] ms, got {ms}")
        return value
