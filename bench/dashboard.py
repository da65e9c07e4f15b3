"""Dashboard responsiveness while it draws a 1 kHz DAQ stream.

Starts the demo lab on a loopback server, opens /ui/ in headless Chromium, watches
daq1 (1 kHz, 4 channels) for a measurement window while clicking a button every
second, then prints the main thread's long tasks, click handling times and the
plotting throughput read from ``window.labdPerf``.

    .venv/bin/python bench/dashboard.py [--seconds 10] [--extra-streams]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

import labd as ld
from labd.server import LabDaemonServer
from labd.sim import setup_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run(seconds: float, extra_streams: bool) -> int:
    if not CHROMIUM.exists():
        print(f"needs Chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    daemon = ld.LabDaemon()
    setup_demo(daemon)
    server = LabDaemonServer(daemon, host="127.0.0.1", port=0)
    server.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server.url.rstrip("/") + "/ui/")
            page.wait_for_selector('[data-testid="events-status"][data-state="live"]')
            watched = ["daq1", "camera1", "meter1"] if extra_streams else ["daq1"]
            for device_id in watched:
                page.click(f'[data-testid="stream-start-{device_id}"]')
                page.click(f'[data-testid="watch-{device_id}"]')
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=\"points-daq1\"]')"
                ".textContent) > 200"
            )
            page.evaluate(
                "() => { const p = window.labdPerf; p.longTasks.length = 0; p.clicks.length = 0;"
                " p.clickDelays.length = 0; p.plottedPoints = 0; p.renders = 0; }"
            )
            points_before = int(page.inner_text('[data-testid="points-daq1"]'))
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                # open and close the token form: two instrumented click handlers
                page.click('[data-testid="token-change"]')
                page.click("#token-cancel")
                page.wait_for_timeout(1_000)
            elapsed = time.monotonic() - started
            perf = page.evaluate("() => window.labdPerf")
            points_after = int(page.inner_text('[data-testid="points-daq1"]'))
            drops = int(page.inner_text('[data-testid="drops-daq1"]'))
            browser.close()
    finally:
        server.stop()
        daemon.shutdown()

    long_tasks: list[float] = perf["longTasks"]
    handled = [d + c for d, c in zip(perf["clickDelays"], perf["clicks"], strict=False)]
    rows = [
        ("streams watched", ", ".join(watched)),
        ("window (s)", f"{elapsed:.1f}"),
        ("daq1 events received /s", f"{(points_after - points_before) / elapsed:.0f}"),
        ("daq1 drops (sequence gaps)", str(drops)),
        ("plotted points /s", f"{perf['plottedPoints'] / elapsed:.0f}"),
        ("plot redraws /s", f"{perf['renders'] / elapsed:.1f}"),
        ("max long task (ms)", f"{max(long_tasks, default=0.0):.0f}"),
        ("long tasks > 50 ms", str(sum(1 for d in long_tasks if d > 50))),
        ("clicks", str(len(handled))),
        ("click handling p50 (ms)", f"{statistics.median(handled):.1f}" if handled else "n/a"),
        ("click handling max (ms)", f"{max(handled):.1f}" if handled else "n/a"),
    ]
    print(f"machine: {machine()}")
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument(
        "--extra-streams", action="store_true", help="also watch camera1 and meter1"
    )
    args = parser.parse_args()
    return run(args.seconds, args.extra_streams)


if __name__ == "__main__":
    sys.exit(main())
