"""Benchmark of labd's HTTP/SSE server on loopback, against a bare ASGI app as the limit.

Run: ``python bench/server.py`` (about a minute). Load clients run in separate
processes and report their own CPU time. Rows:

* HTTP call round trip (p50/p99, calls/s), sequential and with 32 connections:
  ``POST /devices/{id}/call`` on a trivial method vs a bare ASGI app that parses the
  same body with orjson and answers the same shape; the two servers alternate for
  three rounds of 3 s and each figure is the round with the median p50;
* SSE delivery to one client of a 5 kHz device stream;
* fan-out of a 1 kHz stream to 1/10/50 clients: per-client delivery, Jain fairness,
  p99 latency from the envelope timestamp to receipt;
* server RSS with 100 idle SSE clients.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import threading
import time
from datetime import datetime
from typing import Any

import orjson
import uvicorn

import labd
from labd.server import LabDaemonServer

CALL_ROUNDS = 3
CALL_BODY = orjson.dumps({"method": "echo", "args": [42], "kwargs": {}})


# -- server side ---------------------------------------------------------------------------


class Echo:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id

    def echo(self, value: Any) -> Any:
        return value


class Source:
    """Emits ``{"k": k}`` at an exact average rate (catching up after late wake-ups)."""

    def __init__(self, device_id: str, rate_hz: float = 1000.0) -> None:
        self.device_id = device_id
        self.rate_hz = rate_hz
        self.k = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_streaming(self, callback: Any, rate_hz: float | None = None) -> None:
        if self.is_streaming():  # the usual guard of drivers, so figures use that path
            return
        rate = rate_hz or self.rate_hz
        self._stop.clear()
        self.k = 0

        def loop() -> None:
            t0 = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - t0) * rate)
                while self.k < due:
                    callback({"k": self.k})
                    self.k += 1
                self._stop.wait(0.0005)

        self._thread = threading.Thread(target=loop, name="labd-bench-source", daemon=True)
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Silent(Source):
    def start_streaming(self, callback: Any, rate_hz: float | None = None) -> None:
        self._thread = None

    def is_streaming(self) -> bool:
        return True


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The limit: parse the JSON body, answer ``{"result", "success"}``."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    reply = orjson.dumps({"result": request["args"][0], "success": True})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply})


def _loop_name() -> str:
    """The loop uvicorn picks with loop="auto" (both servers use it)."""
    factory = uvicorn.Config(bare_app).get_loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    try:
        return type(loop).__module__.split(".")[0]
    finally:
        loop.close()


def _http_name() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


class BareServer:
    def __init__(self) -> None:
        config = uvicorn.Config(
            bare_app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-bare", daemon=True)

    def start(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5.0)


def nodelay_of(server: uvicorn.Server) -> list[bool]:
    """TCP_NODELAY of each accepted connection."""
    out = []
    for protocol in list(server.server_state.connections):
        sock = protocol.transport.get_extra_info("socket")
        out.append(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- client side (separate processes) --------------------------------------------------------


async def _http_conn(host: str, port: int, path: str, stop_at: float, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(CALL_BODY)}\r\n\r\n"
    ).encode() + CALL_BODY
    times: list[float] = []
    while len(times) < count and time.perf_counter() < stop_at:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length)
        times.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"call failed: {head[:40]!r} {body[:200]!r}")
    writer.close()
    return times


def http_client(url: str, path: str, conns: int, seconds: float, count: int, out: Any) -> None:
    host, port = url.removeprefix("http://").split(":")
    cpu0 = time.process_time()

    async def main() -> list[list[float]]:
        stop_at = time.perf_counter() + seconds
        return await asyncio.gather(
            *(_http_conn(host, int(port), path, stop_at, count) for _ in range(conns))
        )

    started = time.perf_counter()
    results = asyncio.run(main())
    wall = time.perf_counter() - started
    times = [t for r in results for t in r]
    out.put({"times": times, "wall": wall, "cpu": time.process_time() - cpu0})


async def _sse_conn(
    host: str, port: int, path: str, stop: Any, ready: Any, result: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    ready.release()
    seqs: list[int] = []
    lat: list[float] = []
    buf = b""
    parse = datetime.fromisoformat
    while not stop.is_set():
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 0.2)
        except TimeoutError:
            continue
        if not chunk:
            break
        now = time.time()
        buf += chunk
        # Chunked framing lines never start with "data: ", so they are skipped.
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.startswith(b'data: {"event":"device_data"'):
                env = orjson.loads(line[6:])
                seqs.append(env["sequence"])
                lat.append(now - parse(env["timestamp"]).timestamp())
    writer.close()
    result.setdefault("seqs", []).append(seqs)
    result.setdefault("lat", []).append(lat)


def sse_client(url: str, path: str, conns: int, ready: Any, stop: Any, out: Any) -> None:
    host, port = url.removeprefix("http://").split(":")
    cpu0 = time.process_time()
    result: dict[str, Any] = {}

    async def main() -> None:
        flag = _AsyncFlag(stop)
        await asyncio.gather(
            *(_sse_conn(host, int(port), path, flag, ready, result) for _ in range(conns))
        )

    asyncio.run(main())
    result["cpu"] = time.process_time() - cpu0
    out.put(result)


class _AsyncFlag:
    def __init__(self, event: Any) -> None:
        self._event = event
        self._seen = False

    def is_set(self) -> bool:
        if not self._seen:
            self._seen = self._event.is_set()
        return self._seen


def idle_client(url: str, path: str, conns: int, ready: Any, stop: Any) -> None:
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, int(port)))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        socks.append(s)
    for _ in range(conns):
        ready.release()
    stop.wait(60)
    for s in socks:
        s.close()


# -- measurements ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_calls(url: str, path: str, conns: int, seconds: float, count: int) -> dict[str, Any]:
    out: Any = mp.Queue()
    proc = mp.Process(target=http_client, args=(url, path, conns, seconds, count, out))
    proc.start()
    res = out.get(timeout=120)
    proc.join(10)
    times = res["times"]
    return {
        "p50": statistics.median(times) * 1000,
        "p99": pct(times, 0.99) * 1000,
        "rate": len(times) / res["wall"],
        "cpu": res["cpu"],
        "n": len(times),
    }


def measure_stream(
    lab: labd.LabDaemon, device_id: str, url: str, clients: int, seconds: float, procs: int
) -> dict[str, Any]:
    device = lab.get_device(device_id)
    lab.start_streaming(device_id, lambda d: None)
    ready: Any = mp.Semaphore(0)
    stop: Any = mp.Event()
    out: Any = mp.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [
        mp.Process(
            target=sse_client, args=(url, f"/stream/devices/{device_id}", n, ready, stop, out)
        )
        for n in per
        if n
    ]
    for w in workers:
        w.start()
    for _ in range(clients):
        if not ready.acquire(timeout=60):
            raise RuntimeError("SSE clients did not connect")
    time.sleep(0.3)  # let every client pass its first reads
    first = device.k
    time.sleep(seconds)
    last = device.k
    time.sleep(0.5)  # drain what is in flight
    stop.set()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(10)
    lab.stop_streaming(device_id)
    expected = last - first
    counts: list[int] = []
    lat: list[float] = []
    for res in results:
        for seqs, lats in zip(res["seqs"], res["lat"], strict=True):
            inside = [i for i, s in enumerate(seqs) if first <= s < last]
            counts.append(len(inside))
            lat.extend(lats[i] for i in inside)
    fairness = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts)) if any(counts) else 0
    return {
        "expected": expected,
        "rate": expected / seconds,
        "min_pct": 100 * min(counts) / expected,
        "mean_pct": 100 * statistics.mean(counts) / expected,
        "fairness": fairness,
        "p99_ms": pct(lat, 0.99) * 1000 if lat else float("nan"),
        "cpu": sum(r["cpu"] for r in results),
    }


def measure_idle_rss(lab: labd.LabDaemon, url: str, clients: int) -> float:
    stream = lab.device_record("quiet").stream
    assert stream is not None
    lab.start_streaming("quiet", lambda d: None)
    gc.collect()
    before = rss_mb()
    ready: Any = mp.Semaphore(0)
    stop: Any = mp.Event()
    proc = mp.Process(target=idle_client, args=(url, "/stream/devices/quiet", clients, ready, stop))
    proc.start()
    for _ in range(clients):
        ready.acquire(timeout=60)
    deadline = time.monotonic() + 30
    while stream.remote_readers < clients and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    gc.collect()
    extra = rss_mb() - before
    stop.set()
    proc.join(30)
    return extra


def main() -> None:
    t_start = time.monotonic()
    lab = labd.LabDaemon()
    lab.register_plugins(devices={"Echo": Echo, "Source": Source, "Silent": Silent})
    lab.add_device("echo", "Echo")
    lab.add_device("src5k", "Source", rate_hz=5000.0)
    lab.add_device("src1k", "Source", rate_hz=1000.0)
    lab.add_device("quiet", "Silent")
    server = LabDaemonServer(lab, port=0)
    server.start()
    bare = BareServer()
    bare_url = bare.start()
    rows: list[tuple[str, str, str, bool]] = []
    try:
        import httpx

        with httpx.Client(base_url=server.url) as c, httpx.Client(base_url=bare_url) as b:
            c.post("/devices/echo/call", content=CALL_BODY)
            b.post("/", content=CALL_BODY)
            assert server._server is not None
            nodelay = nodelay_of(server._server) + nodelay_of(bare.server)
        calls: dict[tuple[str, int], dict[str, Any]] = {}
        for conns in (1, 32):
            # Alternate the two servers for a few rounds; each figure is the median round.
            rounds: dict[str, list[dict[str, Any]]] = {"labd": [], "bare": []}
            for _ in range(CALL_ROUNDS):
                for name, url, path in (
                    ("labd", server.url, "/devices/echo/call"),
                    ("bare", bare_url, "/"),
                ):
                    count = 2000 if conns == 1 else 10**9
                    rounds[name].append(measure_calls(url, path, conns, 3.0, count))
            for name, results in rounds.items():
                results.sort(key=lambda r: r["p50"])
                calls[name, conns] = results[len(results) // 2]
        for conns in (1, 32):
            mine, limit = calls["labd", conns], calls["bare", conns]
            ratio = mine["p50"] / limit["p50"]
            rows.append(
                (
                    f"call, {conns} conn: p50/p99 ms, calls/s (bare)",
                    f"{mine['p50']:.2f}/{mine['p99']:.2f}, {mine['rate']:.0f}"
                    f" ({limit['p50']:.2f}/{limit['p99']:.2f}, {limit['rate']:.0f});"
                    f" {ratio:.2f}x; client cpu {mine['cpu']:.1f}s",
                    "p50 <= 1.5x bare",
                    ratio <= 1.5,
                )
            )
        one = measure_stream(lab, "src5k", server.url, 1, 5.0, 1)
        rows.append(
            (
                "SSE 1 client @ 5 kHz: received/expected",
                f"{one['min_pct']:.2f} % of {one['rate']:.0f}/s; p99 {one['p99_ms']:.1f} ms;"
                f" client cpu {one['cpu']:.1f}s",
                ">= 99 %",
                one["min_pct"] >= 99.0 and one["rate"] >= 4900,
            )
        )
        for clients in (1, 10, 50):
            fan = measure_stream(lab, "src1k", server.url, clients, 4.0, 1 if clients == 1 else 2)
            ok = fan["min_pct"] >= 99.0 and fan["fairness"] >= 0.99 and fan["p99_ms"] <= 50.0
            rows.append(
                (
                    f"fan-out 1 kHz to {clients}: min %, Jain, p99",
                    f"{fan['min_pct']:.2f} % (mean {fan['mean_pct']:.2f}), {fan['fairness']:.4f},"
                    f" {fan['p99_ms']:.1f} ms; client cpu {fan['cpu']:.1f}s",
                    ">= 99 %, >= 0.99, <= 50 ms" if clients == 50 else "(same)",
                    ok,
                )
            )
        extra = measure_idle_rss(lab, server.url, 100)
        rows.append(("RSS, 100 idle SSE clients", f"+{extra:.1f} MB", "<= 50 MB", extra <= 50))
    finally:
        server.stop()
        bare.stop()
        lab.shutdown()

    print(f"labd {labd.__version__} server benchmark")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs,"
        f" {platform.system()} {platform.release()}; Python {sys.version.split()[0]};"
        f" uvicorn {uvicorn.__version__}; loop {_loop_name()}; http {_http_name()}"
    )
    print(f"TCP_NODELAY on accepted server connections: {nodelay}")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target:<28} {'PASS' if ok else 'MISS'}")
    print(f"total {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
