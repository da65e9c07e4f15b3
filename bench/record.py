"""Sustained HDF5 recording throughput of ``daemon.record``.

A device thread emits at a fixed rate (bursts every millisecond, catching up after
late wake-ups) while a recording writes every datum to a file in a temporary
directory. For each case the table shows the rows and bytes per second that reached
the disk over the whole run (the final drain included) and how many data were lost,
which must be 0.

    python bench/record.py                 # default cases, 3 s each
    python bench/record.py --seconds 5
    python bench/record.py --case scalar=400000 --case array1k=50000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import labd
from labd.recording import load_recording

PAYLOADS: dict[str, Callable[[int], Any]] = {
    "scalar": float,  # a Python float per datum
    "array1k": lambda n: np.full(128, n, dtype=np.float64),  # 1 kB per datum
}
DEFAULT_CASES = [
    ("scalar", 100_000.0),
    ("scalar", 400_000.0),
    ("array1k", 20_000.0),
    ("array1k", 80_000.0),
]


class PacedSource:
    """Emits ``payload(n)`` at ``rate_hz`` from its own thread."""

    def __init__(self, device_id: str, payload: Callable[[int], Any], rate_hz: float) -> None:
        self.device_id = device_id
        self.payload = payload
        self.rate_hz = rate_hz
        self.emitted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_streaming(self, callback: Callable[[Any], Any]) -> None:
        if self.is_streaming():  # the usual guard of drivers, so figures use that path
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(callback,), name=f"labd-bench-{self.device_id}", daemon=True
        )
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, callback: Callable[[Any], Any]) -> None:
        start = time.monotonic()
        payload = self.payload
        while not self._stop.wait(0.001):
            due = int((time.monotonic() - start) * self.rate_hz)
            for n in range(self.emitted, min(due, self.emitted + 10_000)):
                callback(payload(n))
                self.emitted = n + 1


def run_case(kind: str, rate_hz: float, seconds: float, folder: Path) -> dict[str, Any]:
    path = folder / f"{kind}-{int(rate_hz)}.h5"
    with labd.LabDaemon() as daemon:
        daemon.add_device(kind, PacedSource, payload=PAYLOADS[kind], rate_hz=rate_hz)
        stream = daemon.device_record(kind).stream
        assert stream is not None
        started = time.perf_counter()
        recording = daemon.record(kind, path)
        threading.Event().wait(seconds)
        daemon.stop_streaming(kind, timeout=10.0)
        if not recording.wait(120.0):
            raise RuntimeError(f"recording {path} did not finish")
        elapsed = time.perf_counter() - started
        emitted = stream.emitted  # data the hub accepted from the device while it ran
    size = path.stat().st_size
    loaded = load_recording(path)
    contiguous = bool(np.all(np.diff(loaded["sequence"]) == 1))
    return {
        "case": kind,
        "target": rate_hz,
        "emitted": emitted,
        "recorded": recording.recorded,
        "lost": recording.lost,
        "rows_s": recording.recorded / elapsed,
        "mb_s": size / elapsed / 1e6,
        "file_mb": size / 1e6,
        "contiguous": contiguous,
    }


def machine_info() -> str:
    return (
        f"{platform.platform()}; {os.cpu_count()} CPUs; {platform.processor() or 'cpu ?'}; "
        f"Python {platform.python_version()}, NumPy {np.__version__}, h5py {h5py.__version__}, "
        f"HDF5 {h5py.version.hdf5_version}, labd {labd.__version__}"
    )


def parse_case(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    if kind not in PAYLOADS or not rate:
        raise argparse.ArgumentTypeError(f"use KIND=RATE with KIND one of {sorted(PAYLOADS)}")
    return kind, float(rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="recording time per case")
    parser.add_argument(
        "--case", type=parse_case, action="append", help="KIND=RATE_HZ (repeatable)"
    )
    args = parser.parse_args(argv)
    cases = args.case or DEFAULT_CASES
    print(machine_info())
    print(f"{args.seconds:g} s per case; files in a temporary directory\n")
    header = (
        f"{'case':<8} {'target/s':>10} {'emitted':>9} {'recorded':>9} {'lost':>5}"
        f" {'rows/s':>10} {'MB/s':>7} {'file MB':>8} {'gaps':>5}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    with tempfile.TemporaryDirectory(prefix="labd-bench-") as folder:
        for kind, rate in cases:
            r = run_case(kind, rate, args.seconds, Path(folder))
            failed = failed or r["lost"] != 0 or not r["contiguous"]
            print(
                f"{r['case']:<8} {r['target']:>10,.0f} {r['emitted']:>9,} {r['recorded']:>9,}"
                f" {r['lost']:>5} {r['rows_s']:>10,.0f} {r['mb_s']:>7.1f} {r['file_mb']:>8.1f}"
                f" {'no' if r['contiguous'] else 'YES':>5}",
                flush=True,
            )
    if failed:
        print("\ndata were lost: the writer did not keep up at this rate", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
