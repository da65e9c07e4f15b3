"""A wavelength sweep: step a tunable laser and record a power meter at each step.

On the simulated bench the result traces the sample's absorption line
(``OpticalBench.transmission``). The task uses only ``context.daemon.get_device``
and public device methods, so it runs unchanged on a local ``LabDaemon`` and
against a remote server through ``ServerAPI.daemon()``.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

__all__ = ["WavelengthSweep"]

logger = logging.getLogger(__name__)

# Tolerance when comparing accumulated wavelengths with the stop wavelength.
_EPS_NM = 1e-9

_LIVE_PARAMETERS = ("step_nm", "dwell_s")


class WavelengthSweep:
    """Sweep ``laser`` from ``start_nm`` to ``stop_nm`` and read ``meter`` after each step.

    ``step_nm`` and ``dwell_s`` may be changed while the sweep runs. The result
    is ``{"wavelength_nm": [...], "power_mw": [...], "transmission": [...]}``,
    transmission being the meter's reading divided by the laser's power.
    """

    def __init__(
        self,
        task_id: str,
        start_nm: float = 1545.0,
        stop_nm: float = 1555.0,
        step_nm: float = 0.1,
        dwell_s: float = 0.01,
        laser: str = "laser1",
        meter: str = "meter1",
    ) -> None:
        self.task_id = task_id
        self.start_nm = float(start_nm)
        self.stop_nm = float(stop_nm)
        if not (math.isfinite(self.start_nm) and math.isfinite(self.stop_nm)):
            raise ValueError("start_nm and stop_nm must be finite numbers")
        self.laser = laser
        self.meter = meter
        self.device_ids = [laser, meter]
        self._params_lock = threading.Lock()
        self._step_nm = self._checked("step_nm", step_nm)
        self._dwell_s = self._checked("dwell_s", dwell_s)

    def set_parameter(self, key: str, value: Any) -> None:
        """Change ``step_nm`` or ``dwell_s``; the running sweep uses it from its next step."""
        if key not in _LIVE_PARAMETERS:
            raise KeyError(f"{key!r} cannot be changed; settable parameters: step_nm, dwell_s")
        checked = self._checked(key, value)
        with self._params_lock:
            if key == "step_nm":
                self._step_nm = checked
            else:
                self._dwell_s = checked
        logger.info("sweep %s: %s set to %g", self.task_id, key, checked)

    def get_parameter(self, key: str) -> Any:
        """Read a parameter: start_nm, stop_nm, step_nm, dwell_s, laser or meter."""
        with self._params_lock:
            values: dict[str, Any] = {
                "start_nm": self.start_nm,
                "stop_nm": self.stop_nm,
                "step_nm": self._step_nm,
                "dwell_s": self._dwell_s,
                "laser": self.laser,
                "meter": self.meter,
            }
        if key not in values:
            raise KeyError(f"unknown parameter {key!r}; known: {', '.join(values)}")
        return values[key]

    def run(self, context: Any) -> dict[str, list[float]]:
        """Run the sweep; on cancel, return the points measured so far."""
        laser = context.daemon.get_device(self.laser)
        meter = context.daemon.get_device(self.meter)
        result: dict[str, list[float]] = {"wavelength_nm": [], "power_mw": [], "transmission": []}

        span = self.stop_nm - self.start_nm
        direction = 1.0 if span >= 0 else -1.0
        was_enabled = bool(laser.is_output_enabled())
        laser_power = float(laser.get_power())
        laser.enable_output()
        context.report(progress=0.0, message=f"sweeping {self.start_nm:g} to {self.stop_nm:g} nm")
        try:
            wavelength = self.start_nm
            while True:
                if not context.checkpoint():  # waits while paused; False once cancelled
                    break
                with self._params_lock:
                    dwell = self._dwell_s
                laser.set_wavelength(wavelength)
                if not context.sleep(dwell):
                    break
                power = float(meter.read_power())
                result["wavelength_nm"].append(wavelength)
                result["power_mw"].append(power)
                result["transmission"].append(power / laser_power if laser_power > 0 else math.nan)
                progress = 1.0 if span == 0 else min(1.0, (wavelength - self.start_nm) / span)
                context.report(
                    progress=progress,
                    message=f"{wavelength:.3f} nm: {power:.4f} mW",
                    wavelength_nm=wavelength,
                    power_mw=power,
                )
                if wavelength == self.stop_nm:
                    break
                # Re-read the step: a set_parameter during the dwell applies at once.
                with self._params_lock:
                    step = self._step_nm
                next_wavelength = round(wavelength + direction * step, 9)
                if abs(next_wavelength - self.stop_nm) <= _EPS_NM:
                    next_wavelength = self.stop_nm
                elif direction * (next_wavelength - self.stop_nm) > 0:
                    break
                wavelength = next_wavelength
        finally:
            if not was_enabled:
                self._disable_quietly(laser)

        if not context.cancelled:
            context.report(progress=1.0, message=f"done: {len(result['power_mw'])} points")
        return result

    def _disable_quietly(self, laser: Any) -> None:
        try:
            laser.disable_output()
        except Exception:
            logger.warning(
                "sweep %s: could not disable %s's output", self.task_id, self.laser, exc_info=True
            )

    @staticmethod
    def _checked(key: str, value: Any) -> float:
        number = float(value)
        if not (math.isfinite(number) and number > 0.0):
            raise ValueError(f"{key} must be a number > 0, got {value!r}")
        return number
