"""Simulated instruments for demos, tutorials and tests of tasks.

Plain device classes, no labd base classes: ``StreamingDAQ`` (sines plus
noise), ``TunableLaser`` and ``PowerMeter`` meeting on a shared
``OpticalBench`` whose sample has a Lorentzian absorption line, ``Camera``
(a drifting spot), the ``WavelengthSweep`` task that traces that line, and
``setup_demo`` which builds the lab served by ``labd demo``.
"""

from labd.sim.bench import OpticalBench, get_bench, lorentzian_transmission
from labd.sim.camera import Camera
from labd.sim.daq import StreamingDAQ
from labd.sim.demo import setup_demo
from labd.sim.laser import TunableLaser
from labd.sim.meter import PowerMeter
from labd.sim.sweep import WavelengthSweep

__all__ = [
    "Camera",
    "OpticalBench",
    "PowerMeter",
    "StreamingDAQ",
    "TunableLaser",
    "WavelengthSweep",
    "get_bench",
    "lorentzian_transmission",
    "setup_demo",
]
