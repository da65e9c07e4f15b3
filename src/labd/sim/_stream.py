"""The streaming trio's state for a simulated device: at most one ``RateLimitedLoop``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labd.streaming import RateLimitedLoop


class LoopStream:
    """Start, stop and query the one acquisition loop of a simulated instrument."""

    def __init__(self, what: str) -> None:
        self._what = what  # e.g. "camera 'camera1'", for error messages
        self._loop: RateLimitedLoop | None = None

    def running(self) -> bool:
        loop = self._loop
        return loop is not None and loop.is_running()

    def check_idle(self) -> None:
        """Raise RuntimeError when already streaming (before changing stream settings)."""
        if self.running():
            raise RuntimeError(f"{self._what} is already streaming")

    def start(
        self, acquire: Callable[[], Any], emit: Callable[[Any], object], rate_hz: float, name: str
    ) -> None:
        self.check_idle()
        loop = RateLimitedLoop(acquire, emit, rate_hz, name=name)
        loop.start()
        self._loop = loop

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop; does nothing when not streaming."""
        loop = self._loop
        if loop is not None:
            loop.stop(timeout)
