"""A simulated tunable laser that shines onto an ``OpticalBench``.

The laser tunes between ``min_nm`` and ``max_nm``; a wavelength change takes
``settle_time_s`` before the new wavelength reaches the bench, like a real
external-cavity laser settling. Its output starts disabled on connect, as real
lasers do for safety, and is disabled again on disconnect.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from labd.exceptions import DeviceNotConnectedError
from labd.sim.bench import OpticalBench, get_bench

__all__ = ["TunableLaser"]

logger = logging.getLogger(__name__)


class TunableLaser:
    """A tunable CW laser: wavelength, power and an output shutter."""

    def __init__(
        self,
        device_id: str,
        wavelength_nm: float = 1550.0,
        power_mw: float = 1.0,
        settle_time_s: float = 0.02,
        bench: str = "default",
        min_nm: float = 1500.0,
        max_nm: float = 1600.0,
        max_power_mw: float = 10.0,
    ) -> None:
        if not min_nm < max_nm:
            raise ValueError(f"min_nm ({min_nm}) must be below max_nm ({max_nm})")
        if settle_time_s < 0:
            raise ValueError(f"settle_time_s must be >= 0, got {settle_time_s}")
        self.device_id = device_id
        self.min_nm = float(min_nm)
        self.max_nm = float(max_nm)
        self.max_power_mw = float(max_power_mw)
        self.settle_time_s = float(settle_time_s)
        self.bench_name = bench
        self._wavelength_nm = self._checked_wavelength(wavelength_nm)
        self._power_mw = self._checked_power(power_mw)
        self._output_enabled = False
        self._bench: OpticalBench | None = None

    def connect(self) -> None:
        """Put the laser on its bench, output disabled."""
        if self._bench is not None:
            return
        bench = get_bench(self.bench_name)
        bench.attach_source(id(self), self.device_id, self._wavelength_nm, self._power_mw)
        self._output_enabled = False
        self._bench = bench
        logger.info("%s connected on bench %r", self.device_id, self.bench_name)

    def disconnect(self) -> None:
        """Disable the output and take the laser off its bench; safe to call twice."""
        bench, self._bench = self._bench, None
        self._output_enabled = False
        if bench is not None:
            bench.detach_source(id(self))
            logger.info("%s disconnected", self.device_id)

    def is_connected(self) -> bool:
        """Whether the laser is connected."""
        return self._bench is not None

    def set_wavelength(self, nm: float) -> None:
        """Tune to ``nm`` and wait ``settle_time_s`` for the laser to settle."""
        bench = self._connected_bench()
        wavelength = self._checked_wavelength(nm)
        if self.settle_time_s > 0:
            time.sleep(self.settle_time_s)
        self._wavelength_nm = wavelength
        bench.update_source(id(self), wavelength_nm=wavelength)

    def get_wavelength(self) -> float:
        """The current wavelength in nm."""
        self._connected_bench()
        return self._wavelength_nm

    def set_power(self, mw: float) -> None:
        """Set the output power in mW (0 to ``max_power_mw``)."""
        bench = self._connected_bench()
        power = self._checked_power(mw)
        self._power_mw = power
        bench.update_source(id(self), power_mw=power)

    def get_power(self) -> float:
        """The power setpoint in mW (emitted only while the output is enabled)."""
        self._connected_bench()
        return self._power_mw

    def enable_output(self) -> None:
        """Open the output: the bench sees the laser's light."""
        self._set_output(True)

    def disable_output(self) -> None:
        """Close the output."""
        self._set_output(False)

    def is_output_enabled(self) -> bool:
        """Whether the output is enabled."""
        self._connected_bench()
        return self._output_enabled

    def get_status(self) -> dict[str, Any]:
        """A snapshot of the laser's state; works when disconnected too."""
        return {
            "device_id": self.device_id,
            "connected": self._bench is not None,
            "wavelength_nm": self._wavelength_nm,
            "power_mw": self._power_mw,
            "output_enabled": self._output_enabled,
            "bench": self.bench_name,
            "range_nm": [self.min_nm, self.max_nm],
        }

    def _set_output(self, enabled: bool) -> None:
        bench = self._connected_bench()
        self._output_enabled = enabled
        bench.update_source(id(self), output_enabled=enabled)

    def _connected_bench(self) -> OpticalBench:
        bench = self._bench
        if bench is None:
            raise DeviceNotConnectedError(f"laser {self.device_id!r} is not connected")
        return bench

    def _checked_wavelength(self, nm: float) -> float:
        value = float(nm)
        if not (math.isfinite(value) and self.min_nm <= value <= self.max_nm):
            raise ValueError(
                f"wavelength {nm} nm is outside the laser's range "
                f"{self.min_nm:g}-{self.max_nm:g} nm"
            )
        return value

    def _checked_power(self, mw: float) -> float:
        value = float(mw)
        if not (math.isfinite(value) and 0.0 <= value <= self.max_power_mw):
            raise ValueError(f"power {mw} mW is outside the range 0-{self.max_power_mw:g} mW")
        return value
