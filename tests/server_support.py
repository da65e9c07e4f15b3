"""Shared pieces of the server tests: test devices and tasks, a raw SSE reader, fixtures.

The SSE reader speaks HTTP/1.1 over a plain socket (chunked bodies included), so the
server is tested on its own, without labd's clients, and a test can stop a reader at
once (``shutdown`` wakes a blocked ``recv``) or open a stream it never reads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import labd
from labd import LabDaemon

pytest.importorskip("uvicorn")

from labd.server import LabDaemonServer

TIMEOUT = 20.0
TOKENS = {"view-secret": "viewer", "op-secret": "operator", "admin-secret": "admin"}


# -- devices and tasks -------------------------------------------------------------------


class Adder:
    """Plain device: calls, queries, failures and a call that hangs until released."""

    unit = "V"

    def __init__(self, device_id: str, offset: float = 0.0) -> None:
        self.device_id = device_id
        self.offset = offset
        self.value = 0.0
        self.connected = False
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_connect = False
        self.hang_connect = False

    def connect(self) -> None:
        if self.fail_connect:
            raise OSError("instrument unplugged")
        if self.hang_connect:
            self.release.wait(TIMEOUT)
        self.connected = True

    def disconnect(self) -> None:
        self.connected = False

    def add(self, a: float, b: float = 0.0) -> float:
        """Add two numbers and the offset."""
        return a + b + self.offset

    def set_value(self, value: float) -> None:
        self.value = value

    def get_value(self) -> float:
        return self.value

    @labd.query
    def peek(self) -> float:
        return self.value

    def array(self, n: int) -> Any:
        return {"data": np.arange(n), "mean": np.float64(1.5), "count": np.int64(n)}

    def fail(self) -> None:
        raise ValueError("bad value")

    def hang(self) -> str:
        """Block until the test sets ``release``."""
        self.entered.set()
        self.release.wait(TIMEOUT)
        return "late"


class Pusher:
    """Streaming device fed by hand: the test calls ``push`` to emit one datum."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._callback: Any = None
        self.starts = 0
        self.stops = 0

    def start_streaming(self, callback: Callable[[Any], None], **kwargs: Any) -> None:
        self.starts += 1
        self._callback = callback

    def stop_streaming(self, timeout: float | None = None) -> None:
        self.stops += 1
        self._callback = None

    def is_streaming(self) -> bool:
        return self._callback is not None

    def push(self, value: Any) -> None:
        if self._callback is not None:
            self._callback(value)

    def finish(self) -> None:
        """End the stream from the device side (its loop stopped)."""
        self._callback = None


class Ticker:
    """Streams ``{"n": k}`` at ``rate_hz`` from its own ``labd-test-*`` thread."""

    def __init__(self, device_id: str, rate_hz: float = 200.0, size: int = 0) -> None:
        self.device_id = device_id
        self.rate_hz = rate_hz
        self.size = size
        self.starts = 0
        self.stops = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_streaming(
        self, callback: Callable[[Any], None], rate_hz: float | None = None
    ) -> None:
        self.starts += 1
        self._stop.clear()
        period = 1.0 / (rate_hz or self.rate_hz)
        pad = "x" * self.size

        def loop() -> None:
            k = 0
            due = time.monotonic()
            while not self._stop.is_set():
                callback({"n": k, "pad": pad} if pad else {"n": k})
                k += 1
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

        self._thread = threading.Thread(
            target=loop, name=f"labd-test-{self.device_id}", daemon=True
        )
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self.stops += 1
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else TIMEOUT)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Broken:
    """A device whose stream cannot start."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id

    def start_streaming(self, callback: Callable[[Any], None]) -> None:
        raise RuntimeError("sensor head missing")

    def stop_streaming(self) -> None:
        pass


class Hold:
    """Owns ``devices`` until cancelled."""

    def __init__(self, task_id: str, devices: list[str] | None = None) -> None:
        self.device_ids = list(devices or [])

    def run(self, context: labd.TaskContext) -> str:
        context.cancel_event.wait(TIMEOUT * 3)
        return "held"


GATES: dict[str, threading.Event] = {}


class Steps:
    """Reports progress; waits for ``GATES[gate]`` between the first and later reports."""

    def __init__(self, task_id: str, steps: int = 3, gate: str = "", fail: bool = False) -> None:
        self.steps = steps
        self.gate = gate
        self.fail = fail
        self.settings: dict[str, Any] = {"gain": 1}

    def run(self, context: labd.TaskContext) -> dict[str, Any]:
        for i in range(self.steps):
            context.report((i + 1) / self.steps, f"step {i + 1}", index=i)
            if i == 0 and self.gate:
                GATES[self.gate].wait(TIMEOUT)
        if self.fail:
            raise RuntimeError("sweep diverged")
        return {"steps": self.steps}

    def set_parameter(self, key: str, value: Any) -> None:
        if key not in self.settings:
            raise KeyError(key)
        if not isinstance(value, int):
            raise ValueError(f"{key} must be an integer")
        self.settings[key] = value

    def get_parameter(self, key: str) -> Any:
        return self.settings[key]


class Waiter:
    """Runs until cancelled, pausing at its checkpoints; no live parameters."""

    def __init__(self, task_id: str) -> None:
        pass

    def run(self, context: labd.TaskContext) -> str:
        while context.checkpoint():
            context.sleep(0.01)
        return "stopped"


DEVICE_TYPES: dict[str, type] = {
    "Adder": Adder,
    "Pusher": Pusher,
    "Ticker": Ticker,
    "Broken": Broken,
}
TASK_TYPES: dict[str, type] = {"Hold": Hold, "Steps": Steps, "Waiter": Waiter}


# -- a raw SSE reader ----------------------------------------------------------------------


class SSEStream:
    """One ``GET`` of an SSE endpoint over a plain socket; parses events as they arrive."""

    def __init__(
        self,
        base_url: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        url = httpx.URL(base_url)
        assert url.host is not None and url.port is not None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((url.host, url.port))
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {url.host}:{url.port}",
            "Accept: text/event-stream",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buf = b""
        self.eof = False
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])
        }
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            if not self._fill():
                raise EOFError("connection closed")
        out, self._buf = self._buf.split(marker, 1)
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise EOFError("connection closed")
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (chunked transfer decoded)."""
        try:
            while True:
                if self._chunked:
                    size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                    if size == 0:
                        return
                    data = self._read_exact(size)
                    self._read_exact(2)
                    yield data
                else:
                    if not self._buf and not self._fill():
                        return
                    data, self._buf = self._buf, b""
                    yield data
        except EOFError:
            return

    def events(self) -> Iterator[dict[str, Any]]:
        """Parsed events: ``{"event", "id", "data"}`` (data JSON-decoded) or ``{"comment"}``."""
        pending = b""
        fields: dict[str, Any] = {}
        for chunk in self.body():
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode().rstrip("\r")
                if not line:
                    if "data" in fields or "event" in fields:
                        event = {"event": fields.get("event", "message"), "id": fields.get("id")}
                        data = fields.get("data")
                        event["data"] = json.loads(data) if data else None
                        yield event
                    fields = {}
                elif line.startswith(":"):
                    yield {"comment": line[1:].strip()}
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data" and "data" in fields:
                        fields["data"] += "\n" + value
                    else:
                        fields[name] = value

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class SSEReader:
    """Reads an :class:`SSEStream` on a background thread into ``events``."""

    def __init__(self, stream: SSEStream) -> None:
        self.stream = stream
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sse-reader", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, base_url: str, path: str, **kwargs: Any) -> SSEReader:
        stream = SSEStream(base_url, path, **kwargs)
        assert stream.status == 200, stream.status
        return cls(stream)

    def _run(self) -> None:
        try:
            for event in self.stream.events():
                self.events.append(event)
        finally:
            self.ended.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == name]

    def data(self) -> list[dict[str, Any]]:
        """The ``device_data`` envelopes received so far."""
        return [e["data"] for e in self.named("device_data")]

    def sequences(self) -> list[int]:
        return [d["sequence"] for d in self.data()]

    def comments(self) -> list[str]:
        return [e["comment"] for e in list(self.events) if "comment" in e]

    def close(self) -> None:
        self.stream.close()
        self._thread.join(TIMEOUT)


# -- fixtures ---------------------------------------------------------------------------


class Served:
    """A daemon served on a loopback port, with an httpx client at its URL."""

    def __init__(self, daemon: LabDaemon, server: LabDaemonServer, token: str | None) -> None:
        self.daemon = daemon
        self.server = server
        self.url = server.url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT, headers=headers)
        self.readers: list[SSEReader] = []

    def sse(self, path: str, **kwargs: Any) -> SSEReader:
        reader = SSEReader.open(self.url, path, **kwargs)
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.http.close()
        self.server.stop()
        self.daemon.shutdown(timeout=10.0)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Factory: ``serve(daemon_kwargs={}, token=None, **server_kwargs)`` -> Served."""
    made: list[Served] = []

    def make(
        daemon_kwargs: dict[str, Any] | None = None, token: str | None = None, **kwargs: Any
    ) -> Served:
        daemon = LabDaemon(**(daemon_kwargs or {}))
        daemon.register_plugins(devices=DEVICE_TYPES, tasks=TASK_TYPES)
        server = LabDaemonServer(daemon, port=0, **kwargs)
        server.start()
        served = Served(daemon, server, token)
        made.append(served)
        return served

    yield make
    for served in reversed(made):
        served.close()


def assert_error(
    response: httpx.Response, status: int, type_name: str | None = None
) -> dict[str, Any]:
    """Check the status and labd's error schema; return the error object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"type", "message", "origin", "timestamp", "traceback", "context"}
    assert error["origin"] in ("framework", "device", "callback", "task")
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["context"], dict)
    assert error["traceback"] is None or isinstance(error["traceback"], str)
    assert error["timestamp"].endswith("Z")
    if type_name is not None:
        assert error["type"] == type_name, error
    return error  # type: ignore[no-any-return]
