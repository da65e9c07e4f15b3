"""Core overheads of labd, measured on this machine.

1. A device method call through labd's lock wrapper vs the same method under a plain
   ``with RLock:`` vs a bare call.
2. The device thread's time per datum (the hub callback in a tight loop) with history
   off, and with history on and 0, 1 and 100 buffered readers following the ring from a
   reader thread (one waker), the way the server's event loop follows it.

Run: ``python bench/core.py``. Figures are medians over several repetitions.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import labd as ld

REPEATS = 7
CALLS = 200_000
DATA = 20_000


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_ns(run: Callable[[], int], repeats: int = REPEATS) -> float:
    """Median of ``run()``'s returned nanoseconds per operation."""
    run()  # warm-up
    return statistics.median(run() for _ in range(repeats))


class Meter:
    def __init__(self) -> None:
        self.value = 1.0

    def read(self) -> float:
        return self.value


def bench_calls() -> dict[str, float]:
    daemon = ld.LabDaemon()
    try:
        wrapped = daemon.add_device("meter", Meter)
        plain = Meter()
        lock = threading.RLock()

        def labd_call() -> int:
            read = wrapped.read
            t0 = time.perf_counter_ns()
            for _ in range(CALLS):
                read()
            return (time.perf_counter_ns() - t0) // CALLS

        def rlock_call() -> int:
            read = plain.read
            t0 = time.perf_counter_ns()
            for _ in range(CALLS):
                with lock:
                    read()
            return (time.perf_counter_ns() - t0) // CALLS

        def bare_call() -> int:
            read = plain.read
            t0 = time.perf_counter_ns()
            for _ in range(CALLS):
                read()
            return (time.perf_counter_ns() - t0) // CALLS

        variants = {"labd": labd_call, "rlock": rlock_call, "bare": bare_call}
        samples: dict[str, list[int]] = {name: [] for name in variants}
        for run in variants.values():
            run()  # warm-up
        for _ in range(REPEATS):  # round-robin, so load drift hits every variant alike
            for name, run in variants.items():
                samples[name].append(run())
        return {name: statistics.median(values) for name, values in samples.items()}
    finally:
        daemon.shutdown()


class Source:
    """Hands out the hub callback so the benchmark can drive it in a tight loop."""

    def __init__(self) -> None:
        self.emit: Any = None

    def start_streaming(self, callback: Any) -> None:
        if self.is_streaming():  # the usual guard of drivers, so figures use that path
            return
        self.emit = callback

    def stop_streaming(self) -> None:
        self.emit = None

    def is_streaming(self) -> bool:
        return self.emit is not None


class Readers:
    """``count`` cursors into a ring, all advanced by one thread woken by one waker."""

    def __init__(self, ring: Any, count: int) -> None:
        self.ring = ring
        self.cursors = [ring.head] * count
        self.read = 0
        self.skipped = 0
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-readers", daemon=True)
        ring.add_waker(self.wake.set)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(0.05)
            self.wake.clear()
            for i, cursor in enumerate(self.cursors):
                events, self.cursors[i], skipped = self.ring.read(cursor, limit=4096)
                self.read += len(events)
                self.skipped += skipped
            time.sleep(0.001)  # a loop tick: readers batch, as SSE clients do

    def close(self) -> None:
        self.ring.remove_waker(self.wake.set)
        self.stop.set()
        self.thread.join(5)


def bench_emit(history: bool, readers: int) -> tuple[float, float]:
    """(wall ns, device-thread CPU ns) per datum."""
    daemon = ld.LabDaemon()
    try:
        if history:
            daemon.streams.enable_history()
        dev = daemon.add_device("src", Source)
        daemon.start_streaming("src", lambda datum: None)
        ring = daemon.streams.get("src").ring
        group = Readers(ring, readers) if history and readers else None
        payload = {"t": 0.0, "v": [1.0, 2.0, 3.0, 4.0]}
        emit = dev.emit
        cpu: list[int] = []

        def run() -> int:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            for _ in range(DATA):
                emit(payload)
            wall = (time.perf_counter_ns() - t0) // DATA
            cpu.append((time.thread_time_ns() - c0) // DATA)
            return wall

        wall = median_ns(run)
        if group is not None:
            group.close()
        return wall, statistics.median(cpu[1:])
    finally:
        daemon.shutdown()


def main() -> None:
    print(f"labd {ld.__version__} core benchmark")
    print(f"platform : {platform.platform()}")
    print(f"cpu      : {cpu_name()} ({os.cpu_count()} cores)")
    print(f"python   : {platform.python_implementation()} {platform.python_version()}")
    print(f"median of {REPEATS} runs; {CALLS:,} calls / {DATA:,} data per run\n")

    calls = bench_calls()
    rows = [
        ("call: labd-wrapped method", calls["labd"], None),
        ("call: same method under `with RLock:`", calls["rlock"], None),
        ("call: bare method", calls["bare"], None),
    ]
    emit_rows = [
        ("emit: history off", bench_emit(False, 0)),
        ("emit: history on, 0 readers", bench_emit(True, 0)),
        ("emit: history on, 1 reader", bench_emit(True, 1)),
        ("emit: history on, 100 readers", bench_emit(True, 100)),
    ]
    print(f"{'measurement':<40} {'ns/op':>9} {'ops/s':>12} {'device CPU ns/op':>17}")
    print("-" * 81)
    for name, ns, _ in rows:
        print(f"{name:<40} {ns:>9.0f} {1e9 / ns:>12,.0f} {'':>17}")
    for name, (ns, cpu) in emit_rows:
        print(f"{name:<40} {ns:>9.0f} {1e9 / ns:>12,.0f} {cpu:>17.0f}")
    print("-" * 81)
    one, hundred = emit_rows[2][1], emit_rows[3][1]
    ratio = calls["labd"] / calls["rlock"]
    print(f"labd call / RLock call           : {ratio:.2f}x (target <= 1.5x)")
    print(f"100 readers / 1 reader (wall)    : {hundred[0] / one[0]:.2f}x (target <= 1.2x)")
    print(f"100 readers / 1 reader (dev CPU) : {hundred[1] / one[1]:.2f}x")


if __name__ == "__main__":
    main()
