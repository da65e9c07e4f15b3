"""Stream a VISA instrument through labd with the guide's unchanged ``VISAStreamingDevice``.

Without hardware it talks to the simulated voltmeter in ``sim_instrument.yaml``
through pyvisa-sim. To use a real instrument, set ``PYVISA_LIBRARY`` to your
VISA library (or leave it to PyVISA's default) and ``LABD_VISA_ADDRESS`` to its
resource address.

    .venv/bin/python examples/visa/visa_stream.py
"""

import os
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIM_ADDRESS = "TCPIP0::192.168.0.42::inst0::INSTR"
N_VALUES = 5


def main():
    os.environ.setdefault("PYVISA_LIBRARY", f"{HERE / 'sim_instrument.yaml'}@sim")
    address = os.environ.get("LABD_VISA_ADDRESS", SIM_ADDRESS)
    sys.path.insert(0, str(HERE.parent))  # seed_devices.py lives in examples/

    from seed_devices import VISAStreamingDevice

    import labd as ld

    daemon = ld.LabDaemon()
    try:
        daemon.add_device("dvm1", VISAStreamingDevice, address=address)
        daemon.connect_device("dvm1", timeout=10.0)
        print(f"connected to {address}")

        values = []
        enough = threading.Event()

        def on_value(value):
            if len(values) < N_VALUES:
                values.append(value)
                print(f"dvm1: {value:.6f} V")
            else:
                enough.set()

        daemon.start_streaming("dvm1", on_value, sample_rate=20.0)
        if not enough.wait(timeout=10.0):
            print(f"only {len(values)} values arrived in 10 s", file=sys.stderr)
            return 1
        daemon.stop_streaming("dvm1")
        print(f"streamed {len(values)} values, mean {sum(values) / len(values):.6f} V")
        return 0
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    sys.exit(main())
