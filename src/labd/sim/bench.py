"""A shared simulated optical bench: laser sources shining through a sample onto a detector.

The sample has one Lorentzian absorption line. Its power transmission at
wavelength w (nm) is

    T(w) = 1 - depth * g**2 / ((w - w0)**2 + g**2)

with line centre w0 = 1550.0 nm, half width at half maximum g = 0.4 nm and
depth 0.7 by default, so T is 1 far from the line and 1 - depth = 0.3 at its
centre. A detector on the bench sees the sum over enabled lasers of
power * T(wavelength).

Benches are looked up by name (``get_bench("default")``), so a ``TunableLaser``
and a ``PowerMeter`` added to a daemon separately meet on the same bench.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = ["OpticalBench", "get_bench", "lorentzian_transmission"]

logger = logging.getLogger(__name__)

DEFAULT_CENTER_NM = 1550.0
DEFAULT_WIDTH_NM = 0.4
DEFAULT_DEPTH = 0.7


@overload
def lorentzian_transmission(
    wavelength_nm: float, center_nm: float = ..., width_nm: float = ..., depth: float = ...
) -> float: ...
@overload
def lorentzian_transmission(
    wavelength_nm: npt.ArrayLike, center_nm: float = ..., width_nm: float = ..., depth: float = ...
) -> npt.NDArray[np.float64]: ...
def lorentzian_transmission(
    wavelength_nm: float | npt.ArrayLike,
    center_nm: float = DEFAULT_CENTER_NM,
    width_nm: float = DEFAULT_WIDTH_NM,
    depth: float = DEFAULT_DEPTH,
) -> float | npt.NDArray[np.float64]:
    """Transmission of a Lorentzian absorption line; a float for a float, an array for an array."""
    detuning = np.asarray(wavelength_nm, dtype=np.float64) - center_nm
    gamma2 = width_nm * width_nm
    t = 1.0 - depth * gamma2 / (detuning * detuning + gamma2)
    if t.ndim == 0:
        return float(t)
    return t


@dataclass
class _Source:
    """What the bench knows about one laser: enough to compute detected power."""

    label: str
    wavelength_nm: float
    power_mw: float
    output_enabled: bool = False


class OpticalBench:
    """A named bench holding the laser sources and the sample; safe to use from any thread."""

    def __init__(
        self,
        name: str = "default",
        center_nm: float = DEFAULT_CENTER_NM,
        width_nm: float = DEFAULT_WIDTH_NM,
        depth: float = DEFAULT_DEPTH,
    ) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._sources: dict[int, _Source] = {}
        self._center_nm = DEFAULT_CENTER_NM
        self._width_nm = DEFAULT_WIDTH_NM
        self._depth = DEFAULT_DEPTH
        self.set_sample(center_nm=center_nm, width_nm=width_nm, depth=depth)

    def __repr__(self) -> str:
        return f"OpticalBench({self.name!r})"

    # -- the sample ---------------------------------------------------------------

    def set_sample(
        self,
        center_nm: float | None = None,
        width_nm: float | None = None,
        depth: float | None = None,
    ) -> None:
        """Change the absorption line; parameters left as None keep their value."""
        with self._lock:
            new_center = self._center_nm if center_nm is None else float(center_nm)
            new_width = self._width_nm if width_nm is None else float(width_nm)
            new_depth = self._depth if depth is None else float(depth)
            if not new_width > 0.0:
                raise ValueError(f"width_nm must be > 0, got {new_width}")
            if not 0.0 <= new_depth <= 1.0:
                raise ValueError(f"depth must be within [0, 1], got {new_depth}")
            self._center_nm, self._width_nm, self._depth = new_center, new_width, new_depth

    def get_sample(self) -> dict[str, float]:
        """The absorption line's parameters: ``center_nm``, ``width_nm``, ``depth``."""
        with self._lock:
            return {"center_nm": self._center_nm, "width_nm": self._width_nm, "depth": self._depth}

    @overload
    def transmission(self, wavelength_nm: float) -> float: ...
    @overload
    def transmission(self, wavelength_nm: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
    def transmission(self, wavelength_nm: float | npt.ArrayLike) -> float | npt.NDArray[np.float64]:
        """The sample's transmission at a wavelength (or an array of them), without noise."""
        with self._lock:
            center, width, depth = self._center_nm, self._width_nm, self._depth
        return lorentzian_transmission(wavelength_nm, center, width, depth)

    # -- laser sources --------------------------------------------------------------

    def attach_source(self, key: int, label: str, wavelength_nm: float, power_mw: float) -> None:
        """Put a laser on the bench (output off); ``key`` identifies it, ``label`` names it."""
        with self._lock:
            self._sources[key] = _Source(label, float(wavelength_nm), float(power_mw))
        logger.debug("bench %s: source %s attached", self.name, label)

    def detach_source(self, key: int) -> None:
        """Take a laser off the bench; unknown keys are ignored."""
        with self._lock:
            source = self._sources.pop(key, None)
        if source is not None:
            logger.debug("bench %s: source %s detached", self.name, source.label)

    def update_source(
        self,
        key: int,
        *,
        wavelength_nm: float | None = None,
        power_mw: float | None = None,
        output_enabled: bool | None = None,
    ) -> None:
        """Change an attached laser's state; fields left as None are kept."""
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                raise KeyError(f"no source {key} on bench {self.name!r}")
            if wavelength_nm is not None:
                source.wavelength_nm = float(wavelength_nm)
            if power_mw is not None:
                source.power_mw = float(power_mw)
            if output_enabled is not None:
                source.output_enabled = bool(output_enabled)

    def source_labels(self) -> list[str]:
        """Labels of the lasers on the bench (their device ids)."""
        with self._lock:
            return [s.label for s in self._sources.values()]

    def detected_power_mw(self) -> float:
        """Noise-free power on the detector: sum of power * T(wavelength) over enabled lasers."""
        with self._lock:
            lit = [
                (s.wavelength_nm, s.power_mw) for s in self._sources.values() if s.output_enabled
            ]
            center, width, depth = self._center_nm, self._width_nm, self._depth
        total = 0.0
        for wavelength, power in lit:
            total += power * lorentzian_transmission(wavelength, center, width, depth)
        return total


_registry: dict[str, OpticalBench] = {}
_registry_lock = threading.Lock()


def get_bench(name: str = "default") -> OpticalBench:
    """The bench called ``name``, created with the default sample on first use."""
    with _registry_lock:
        bench = _registry.get(name)
        if bench is None:
            bench = _registry[name] = OpticalBench(name)
        return bench
