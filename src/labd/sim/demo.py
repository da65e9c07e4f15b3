"""The demo lab served by ``labd demo``: a DAQ, a laser and power meter on one bench, a camera."""

from __future__ import annotations

from typing import Any

from labd.sim.camera import Camera
from labd.sim.daq import StreamingDAQ
from labd.sim.laser import TunableLaser
from labd.sim.meter import PowerMeter
from labd.sim.sweep import WavelengthSweep

__all__ = ["DEMO_DEVICE_TYPES", "DEMO_TASK_TYPES", "setup_demo"]

DEMO_DEVICE_TYPES: dict[str, type] = {
    "StreamingDAQ": StreamingDAQ,
    "TunableLaser": TunableLaser,
    "PowerMeter": PowerMeter,
    "Camera": Camera,
}
DEMO_TASK_TYPES: dict[str, type] = {"sweep": WavelengthSweep}


def setup_demo(daemon: Any, bench: str = "default") -> None:
    """Register the sim types, add ``daq1``, ``laser1``, ``meter1``, ``camera1`` and connect them.

    The task type ``sweep`` (``WavelengthSweep``) sweeps ``laser1`` and reads ``meter1``.
    """
    daemon.register_plugins(devices=DEMO_DEVICE_TYPES, tasks=DEMO_TASK_TYPES)
    daemon.add_device("daq1", "StreamingDAQ")
    daemon.add_device("laser1", "TunableLaser", bench=bench)
    daemon.add_device("meter1", "PowerMeter", bench=bench)
    daemon.add_device("camera1", "Camera")
    for device_id in ("daq1", "laser1", "meter1", "camera1"):
        daemon.connect_device(device_id)
