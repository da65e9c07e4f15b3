"""Record two seconds of a simulated DAQ stream to HDF5, then read the file back.

python examples/record_stream.py
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np

import labd as ld
from labd.recording import load_recording
from labd.sim import StreamingDAQ


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, ld.LabDaemon() as daemon:
        path = Path(folder) / "daq1.h5"
        daemon.add_device("daq1", StreamingDAQ, channels=4, rate_hz=2000.0, seed=1)
        daemon.connect_device("daq1")

        # Recording starts the stream; the `with` block stops the recording.
        with daemon.record("daq1", path, metadata={"sample": "demo", "operator": "me"}) as rec:
            threading.Event().wait(2.0)  # acquire for two seconds
        daemon.stop_streaming("daq1")
        print(f"recorded {rec.recorded} samples, lost {rec.lost}")

        run = load_recording(path)
        sequence, stamps, data = run["sequence"], run["timestamp"], run["data"]
        span = stamps[-1] - stamps[0]
        print(f"file: {path.name}, {path.stat().st_size / 1e6:.2f} MB")
        print(f"data: {data.shape} {data.dtype}, sequence {sequence[0]}..{sequence[-1]}")
        print(f"contiguous: {bool(np.all(np.diff(sequence) == 1))}")
        print(f"rate: {(len(sequence) - 1) / span:.0f} samples/s over {span:.2f} s")
        print(f"channel means: {np.round(data.mean(axis=0), 3).tolist()}")
        meta = run["metadata"]
        print(
            f"metadata: device {meta['device_id']} ({meta['device_type']}),"
            f" sample {meta['sample']!r}, recorded on {meta['hostname']} with labd"
            f" {meta['labd_version']}"
        )


if __name__ == "__main__":
    main()
