"""labd quick start: simulated instruments, a live stream and an experiment task.

.venv/bin/python examples/quickstart.py
"""

import time

import labd as ld
from labd.sim import PowerMeter, StreamingDAQ, TunableLaser, WavelengthSweep


def main():
    daemon = ld.LabDaemon()
    try:
        # Devices are plain classes; labd makes them safe to share between threads.
        laser = daemon.add_device("laser1", TunableLaser, power_mw=2.0)
        meter = daemon.add_device("meter1", PowerMeter, seed=1)
        daemon.add_device("daq1", StreamingDAQ, channels=2, rate_hz=100.0)
        for device_id in daemon.list_devices():
            daemon.connect_device(device_id)

        # Direct calls, exactly as in a script.
        laser.enable_output()
        laser.set_wavelength(1550.0)
        print(f"at {laser.get_wavelength():.1f} nm the meter reads {meter.read_power():.3f} mW")
        laser.set_wavelength(1560.0)
        print(f"at {laser.get_wavelength():.1f} nm the meter reads {meter.read_power():.3f} mW")
        laser.disable_output()

        # A stream: the callback runs on the DAQ's thread for every sample.
        count = 0

        def on_sample(sample):
            nonlocal count
            count += 1
            if count % 25 == 0:
                print(f"daq1 sample {count}: " + ", ".join(f"{v:+.3f}" for v in sample))

        daemon.start_streaming("daq1", on_sample)
        time.sleep(1.0)
        daemon.stop_streaming("daq1")
        print(f"daq1 streamed {count} samples in about a second")

        # A task: sweep the laser across the sample's absorption line.
        daemon.register_plugins(tasks={"sweep": WavelengthSweep})
        handle = daemon.execute_task(
            "sweep1", "sweep", start_nm=1548.0, stop_nm=1552.0, step_nm=0.2, dwell_s=0.005
        )
        shown = -1.0
        while handle.is_running():
            progress = handle.progress or 0.0
            if progress >= shown + 0.25:
                shown = progress
                print(f"sweep {progress:4.0%}  {handle.message}")
            time.sleep(0.02)
        result = handle.wait(timeout=10.0)
        dip = min(result["transmission"])
        where = result["wavelength_nm"][result["transmission"].index(dip)]
        print(
            f"sweep {handle.status}: {len(result['wavelength_nm'])} points, "
            f"deepest transmission {dip:.2f} at {where:.1f} nm"
        )
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    main()
