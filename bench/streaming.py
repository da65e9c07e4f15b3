"""How closely labd.streaming.RateLimitedLoop keeps its schedule.

Runs the loop at 100 Hz and 1 kHz (alone, and feeding a BackpressureQueue) and
prints achieved rate against target, schedule error (actual - ideal tick start)
percentiles and overruns, then BackpressureQueue throughput.

    .venv/bin/python bench/streaming.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from typing import Any

import numpy as np

from labd.streaming import BackpressureQueue, RateLimitedLoop


def run_loop(rate_hz: float, seconds: float, *, with_queue: bool) -> dict[str, Any]:
    ticks: list[tuple[float, float]] = []
    queue = BackpressureQueue(lambda _: None, maxsize=1000, name="bench") if with_queue else None
    emit = queue.put if queue is not None else (lambda _: None)
    loop = RateLimitedLoop(
        lambda: 0.0, emit, rate_hz, name="bench", on_tick=lambda i, a: ticks.append((i, a))
    )
    if queue is not None:
        queue.start()
    loop.start()
    done = threading.Event()
    done.wait(seconds)
    loop.stop(timeout=5.0)
    if queue is not None:
        queue.stop(timeout=5.0, drain=True)
    errors_ms = np.array([(a - i) * 1e3 for i, a in ticks])
    elapsed = ticks[-1][1] - ticks[0][1]
    achieved = (len(ticks) - 1) / elapsed if elapsed > 0 else float("nan")
    return {
        "target": rate_hz,
        "queue": with_queue,
        "ticks": len(ticks),
        "achieved_pct": 100.0 * achieved / rate_hz,
        "p50": float(np.percentile(errors_ms, 50)),
        "p99": float(np.percentile(errors_ms, 99)),
        "max": float(errors_ms.max()),
        "overruns": loop.overruns,
        "dropped": queue.dropped if queue is not None else 0,
    }


def queue_throughput(items: int) -> float:
    done = threading.Event()
    count = 0

    def consume(_: Any) -> None:
        nonlocal count
        count += 1
        if count == items:
            done.set()

    queue = BackpressureQueue(consume, maxsize=items, name="bench-throughput")
    queue.start()
    started = time.perf_counter()
    for i in range(items):
        queue.put(i)
    done.wait(60.0)
    elapsed = time.perf_counter() - started
    queue.stop(timeout=5.0)
    return items / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    args = parser.parse_args()

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"each run: {args.seconds:g} s; schedule error = actual - ideal tick start\n")
    header = (
        f"{'target':>8} {'queue':>5} {'ticks':>6} {'rate %':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'overruns':>8} {'dropped':>7}"
    )
    print(header)
    print("-" * len(header))
    for rate in (100.0, 1000.0):
        for with_queue in (False, True):
            r = run_loop(rate, args.seconds, with_queue=with_queue)
            print(
                f"{r['target']:>6g}Hz {'yes' if r['queue'] else 'no':>5} {r['ticks']:>6} "
                f"{r['achieved_pct']:>7.2f} {r['p50']:>7.3f} {r['p99']:>7.3f} {r['max']:>7.3f} "
                f"{r['overruns']:>8} {r['dropped']:>7}"
            )
    rate = queue_throughput(200_000)
    print(f"\nBackpressureQueue put -> callback throughput: {rate:,.0f} items/s")


if __name__ == "__main__":
    main()
