"""Soak: a labd server under steady mixed load; nothing may fail and nothing may grow.

    .venv/bin/python bench/soak.py --duration 600

The server runs in this process; the load runs in a child process: SSE clients that
leave and come back at random (resuming with ``Last-Event-ID``), clients calling device
methods, and a task started and cancelled in a loop. This process samples its threads,
open file descriptors and RSS while the load runs. The run fails (exit status 1) on any
5xx answer, any event seen out of order, any client error, or when a sampled figure
grows from the first third of the run to the last (see ``GROWTH`` for the margins).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

import labd
from labd.server import LabDaemonServer

#: How much a sampled figure may grow from the first third of a run to the last:
#: (absolute, relative). Allocators and caches settle early; a leak keeps going.
GROWTH = {"threads": (2, 0.0), "fds": (10, 0.0), "rss_mb": (8.0, 0.05)}


class Source:
    """A streaming instrument: its own acquisition thread at ``rate_hz``, the usual guard."""

    def __init__(self, device_id: str, rate_hz: float = 500.0) -> None:
        self.device_id = device_id
        self.rate_hz = rate_hz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_streaming(self, callback: Any) -> None:
        if self.is_streaming():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._acquire, args=(callback,), daemon=True)
        self._thread.start()

    def _acquire(self, callback: Any) -> None:
        period = 1.0 / self.rate_hz
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            callback({"n": n, "value": n * 0.5})
            n += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop_streaming(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Echo:
    """A plain instrument with a setter, a getter and an echo."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.value = 0.0

    def echo(self, value: Any) -> Any:
        return value

    def set_value(self, value: float) -> None:
        self.value = value

    def get_value(self) -> float:
        return self.value


class Scan:
    """A task that reports progress until it is cancelled."""

    def __init__(self, task_id: str, step_s: float = 0.02) -> None:
        self.task_id = task_id
        self.step_s = step_s

    def run(self, context: labd.TaskContext) -> int:
        steps = 0
        while context.checkpoint() and context.sleep(self.step_s):
            steps += 1
            context.report(min(1.0, steps / 1000), f"step {steps}", step=steps)
        return steps


# -- the load (child process) ------------------------------------------------------------


def _sse_client(url: str, stop: threading.Event, stats: Counter[str], rng: random.Random) -> None:
    import httpx

    last_id: str | None = None
    last_seq = -1
    last_run = -1
    with httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, read=30.0)) as client:
        while not stop.is_set():
            headers = {"Last-Event-ID": last_id} if last_id is not None else {}
            leave_at = time.monotonic() + rng.uniform(0.2, 4.0)
            try:
                with client.stream("GET", "/stream/devices/src", headers=headers) as reply:
                    stats[f"sse {reply.status_code}"] += 1
                    if reply.status_code != 200:
                        continue
                    for line in reply.iter_lines():
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("data:"):
                            event = json.loads(line[5:])
                            seq, run = event["sequence"], event["run"]
                            if run == last_run and seq <= last_seq:
                                stats["events out of order"] += 1
                            last_seq, last_run = seq, run
                            stats["events"] += 1
                        if stop.is_set() or time.monotonic() >= leave_at:
                            break
                stats["reconnects"] += 1
            except httpx.HTTPError as exc:
                stats[f"sse client error {type(exc).__name__}"] += 1


def _caller(url: str, stop: threading.Event, stats: Counter[str], rng: random.Random) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=10.0) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 50 == 0:
                    reply = client.get(rng.choice(["/devices", "/tasks", "/health", "/metrics"]))
                else:
                    reply = client.post("/devices/echo/call", json={"method": "echo", "args": [i]})
                    if reply.status_code == 200 and reply.json()["result"] != i:
                        stats["wrong results"] += 1
                stats[f"http {reply.status_code}"] += 1
                stats["requests"] += 1
            except httpx.HTTPError as exc:
                stats[f"call client error {type(exc).__name__}"] += 1


def _task_cycler(url: str, stop: threading.Event, stats: Counter[str], rng: random.Random) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=10.0) as client:
        n = 0
        while not stop.is_set():
            n += 1
            task_id = f"scan-{n}"
            try:
                started = client.post("/tasks", json={"task_id": task_id, "task_type": "Scan"})
                stats[f"http {started.status_code}"] += 1
                if started.status_code != 201:
                    continue
                stop.wait(rng.uniform(0.05, 0.5))
                cancelled = client.post(f"/tasks/{task_id}/cancel")
                stats[f"http {cancelled.status_code}"] += 1
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline:
                    status = client.get(f"/tasks/{task_id}").json()["status"]
                    if status in ("completed", "cancelled", "failed"):
                        stats[f"task {status}"] += 1
                        break
                    time.sleep(0.02)
                else:
                    stats["task did not end"] += 1
            except httpx.HTTPError as exc:
                stats[f"task client error {type(exc).__name__}"] += 1


def run_load(
    url: str, duration: float, sse_clients: int, callers: int, seed: int, out: Any
) -> None:
    """The child process: every kind of client at once for ``duration`` seconds."""
    stop = threading.Event()
    rng = random.Random(seed)
    stats: list[Counter[str]] = []
    threads = []
    for kind, count in ((_sse_client, sse_clients), (_caller, callers), (_task_cycler, 1)):
        for _ in range(count):
            mine: Counter[str] = Counter()
            stats.append(mine)
            args = (url, stop, mine, random.Random(rng.random()))
            threads.append(threading.Thread(target=kind, args=args, daemon=True))
    for thread in threads:
        thread.start()
    stop.wait(duration)
    stop.set()
    for thread in threads:
        thread.join(30.0)
    total: Counter[str] = Counter()
    for mine in stats:
        total.update(mine)
    total["clients still running"] = sum(t.is_alive() for t in threads)
    out.put(dict(total))


# -- the server side (this process) ------------------------------------------------------


def sample() -> dict[str, float]:
    rss_kb = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {
        "t": time.monotonic(),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_mb": rss_kb / 1024,
    }


def growth(samples: list[dict[str, float]]) -> dict[str, tuple[float, float, bool]]:
    """Per figure: median of the first third, of the last third, and whether it grew."""
    third = max(1, len(samples) // 3)
    verdict = {}
    for key, (absolute, relative) in GROWTH.items():
        first = statistics.median(s[key] for s in samples[:third])
        last = statistics.median(s[key] for s in samples[-third:])
        verdict[key] = (first, last, last > first * (1 + relative) + absolute)
    return verdict


def soak(duration: float, sse_clients: int, callers: int, seed: int) -> dict[str, Any]:
    daemon = labd.LabDaemon()
    daemon.register_plugins(devices={"Source": Source, "Echo": Echo}, tasks={"Scan": Scan})
    daemon.add_device("src", "Source")
    daemon.add_device("echo", "Echo")
    server = LabDaemonServer(daemon, port=0)
    server.start()
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    child = spawn.Process(
        target=run_load, args=(server.url, duration, sse_clients, callers, seed, out)
    )
    samples = [sample()]
    started = time.monotonic()
    child.start()
    interval = max(0.5, duration / 120)
    load: dict[str, int] = {}
    try:
        while child.is_alive() and time.monotonic() - started < duration + 60:
            time.sleep(interval)
            samples.append(sample())
            if time.monotonic() - started >= duration:
                break
        load = out.get(timeout=90.0)
        child.join(30.0)
    finally:
        if child.is_alive():
            child.kill()
        server.stop()
        daemon.shutdown(timeout=10.0)
    # Drop the warm-up (the first tenth): clients connecting, caches filling.
    steady = samples[max(1, len(samples) // 10) :]
    left = [t.name for t in threading.enumerate() if t.name.startswith("labd-") and t.is_alive()]
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "sse_clients": sse_clients,
        "callers": callers,
        "load": load,
        "samples": steady,
        "growth": growth(steady),
        "labd_threads_left": left,
    }


def failures(result: dict[str, Any]) -> list[str]:
    load: dict[str, int] = result["load"]
    found = [f"{key}: {count}" for key, count in load.items() if " 5" in key and count]
    for bad in ("events out of order", "wrong results", "task did not end"):
        if load.get(bad):
            found.append(f"{bad}: {load[bad]}")
    found += [f"{k}: {v}" for k, v in load.items() if "client error" in k and v]
    if load.get("clients still running"):
        found.append(f"clients still running: {load['clients still running']}")
    if not load.get("events") or not load.get("requests"):
        found.append("no load ran")
    for key, (first, last, grew) in result["growth"].items():
        if grew:
            found.append(f"{key} grew from {first:.1f} to {last:.1f}")
    if result["labd_threads_left"]:
        found.append(f"labd threads left: {result['labd_threads_left']}")
    return found


def print_table(result: dict[str, Any], problems: list[str]) -> None:
    print(
        f"labd soak: {result['duration_s']} s, {result['sse_clients']} SSE clients reconnecting"
        f" at random, {result['callers']} callers, 1 task start/cancel loop"
    )
    print(
        f"machine: {platform.machine()}  {len(os.sched_getaffinity(0))} CPUs,"
        f" Python {platform.python_version()}"
    )
    load = result["load"]
    print(f"\n{'load':40} {'count':>10}")
    for key in sorted(load):
        print(f"{key:40} {load[key]:>10}")
    print(f"\n{'sampled (steady state)':24} {'first third':>12} {'last third':>12} {'grew':>6}")
    for key, (first, last, grew) in result["growth"].items():
        print(f"{key:24} {first:>12.1f} {last:>12.1f} {'yes' if grew else 'no':>6}")
    print(f"\nresult: {'FAIL' if problems else 'PASS'}")
    for problem in problems:
        print(f"  - {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--sse-clients", type=int, default=20)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = soak(args.duration, args.sse_clients, args.callers, args.seed)
    problems = failures(result)
    print_table(result, problems)
    if args.json:
        result["failures"] = problems
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
