"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis), and hostile inputs.

Against a live server with devices and tasks: no answer is a 5xx other than the
documented 500 (a device raised) and 504 (a device call timed out), every 4xx and 5xx
carries labd's error body, and the server is healthy afterwards. The stream endpoints
are left out of the generated cases (they stream until the client leaves) and are
covered by hand below.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from helpers import wait_until

pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from labd import LabDaemon  # noqa: E402
from labd.server import LabDaemonServer  # noqa: E402
from labd.server.app import create_app  # noqa: E402
from server_support import (  # noqa: E402
    DEVICE_TYPES,
    TASK_TYPES,
    TIMEOUT,
    TOKENS,
    Served,
    SSEStream,
    assert_error,
    serve,  # noqa: F401
)

#: Examples per operation: enough to reach every status the schema allows, bounded for CI.
EXAMPLES = 30


def check_answer(response: Any) -> None:
    """labd's promises for any answer to any request."""
    status = response.status_code
    assert status < 500 or status in (500, 504), (status, response.text[:500])
    if status >= 400:
        body = response.json()
        error = body["error"]
        assert {"type", "message", "origin", "timestamp", "context"} <= set(error), body
        if status == 500:
            assert error["origin"] == "device", body  # never the framework's own failure


@pytest.fixture(scope="module")
def fuzz_lab() -> Iterator[tuple[LabDaemon, LabDaemonServer]]:
    daemon = LabDaemon()
    daemon.register_plugins(devices=DEVICE_TYPES, tasks=TASK_TYPES)
    daemon.add_device("adder", "Adder")
    daemon.add_device("tick", "Ticker")
    daemon.call_device("adder", "add", (1, 2))  # its call thread lives as long as the lab
    server = LabDaemonServer(daemon, port=0, call_timeout=5.0)
    server.start()
    yield daemon, server
    server.stop()
    daemon.shutdown(timeout=10.0)


def _openapi() -> dict[str, Any]:
    """The server's own schema, as ``GET /openapi.json`` serves it."""
    daemon = LabDaemon()
    try:
        document: dict[str, Any] = create_app(daemon).api.openapi()
    finally:
        daemon.shutdown(timeout=5.0)
    return document


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path_regex="^/stream/")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers(
    case: Any, fuzz_lab: tuple[LabDaemon, LabDaemonServer]
) -> None:
    _, server = fuzz_lab
    check_answer(case.call(base_url=server.url, timeout=TIMEOUT))


def test_the_server_is_healthy_after_fuzzing(fuzz_lab: tuple[LabDaemon, LabDaemonServer]) -> None:
    daemon, server = fuzz_lab
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        assert http.get("/health").json()["status"] == "healthy"
        reply = http.post("/devices/adder/call", json={"method": "add", "args": [1, 2]})
        assert reply.json() == {"result": 3.0, "success": True}
    assert daemon.list_devices()[:2] == ["adder", "tick"]


# -- hostile inputs, by hand ------------------------------------------------------------

PRIVATE_NAMES = ["_ld_lock", "__class__", "__init__", "__dict__", "_private", "__getattr__"]


@pytest.fixture
def lab(serve: Callable[..., Served]) -> Served:  # noqa: F811
    served = serve()
    served.daemon.add_device("adder", "Adder")
    return served


@pytest.mark.parametrize("name", [*PRIVATE_NAMES, "unit", "value", "", "add.__globals__"])
def test_no_private_or_non_callable_name_can_be_called(lab: Served, name: str) -> None:
    reply = lab.http.post("/devices/adder/call", json={"method": name, "args": []})
    assert reply.status_code in (400, 422)
    check_answer(reply)
    assert lab.daemon.get_device("adder").value == 0.0


@pytest.mark.parametrize("name", PRIVATE_NAMES)
def test_private_names_in_paths_and_bodies_are_refused(lab: Served, name: str) -> None:
    http = lab.http
    for reply in (
        http.get(f"/devices/{name}"),
        http.get(f"/devices/{name}/methods"),
        http.post(f"/devices/{name}/call", json={"method": "add", "args": [1]}),
        http.post(f"/devices/{name}/connect"),
        http.delete(f"/devices/{name}"),
        http.get(f"/tasks/{name}"),
        http.post(f"/tasks/{name}/cancel"),
        http.post("/devices", json={"device_id": "x", "device_type": name}),
        http.post("/tasks", json={"task_id": "t", "task_type": name}),
        http.post("/devices", json={"device_id": "y", "device_type": "Adder", "params": {name: 1}}),
    ):
        assert 400 <= reply.status_code < 500, (reply.request.url, reply.status_code)
        check_answer(reply)
    assert lab.daemon.list_devices() == ["adder"]


@pytest.mark.parametrize(
    "path",
    [
        "/devices/adder%2Fcall/call",
        "/devices/../devices/adder/call",
        "/devices/%2e%2e/adder/call",
        "/devices/adder/../adder/call",
        "/devices/ad%00der/call",
        "/devices/%ff%fe/call",
    ],
)
def test_odd_path_segments_never_reach_another_route(lab: Served, path: str) -> None:
    url = httpx.URL(lab.url)
    assert url.host is not None and url.port is not None
    body = b'{"method": "set_value", "args": [5]}'
    # Sent as bytes on a socket: httpx would normalise the path first.
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.host, url.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:300]
    assert status in (200, 400, 404), answer[:300]
    if status == 200:  # a path that normalises to the call itself is the call, nothing else
        assert lab.daemon.get_device("adder").value == 5


@pytest.mark.parametrize(
    "body",
    [
        b'{"method": "add", "args": [NaN, 1]}',
        b'{"method": "add", "args": [Infinity, 1]}',
        b'{"method": "add", "args": [1e999, 1]}',
        b'{"method": "add", "args": ["\xff\xfe", 1]}',
        b'{"method": "add\xc3", "args": [1]}',
        b"\xff\xfe\x00{}",
        b'{"method": "add", "args": [1, 2], "method": "fail"}',
        b'{"method": "add", "args": 5}',
        b'{"method": "add", "kwargs": []}',
        b'{"method": "add", "args": [1], "timeout": -1}',
        b'{"method": "add", "args": [1], "timeout": "soon"}',
        b'[{"method": "add"}]',
        b'"add"',
        b"",
    ],
)
def test_malformed_call_bodies_get_a_clear_4xx(lab: Served, body: bytes) -> None:
    reply = lab.http.post(
        "/devices/adder/call", content=body, headers={"Content-Type": "application/json"}
    )
    check_answer(reply)
    assert reply.status_code < 500 or (reply.status_code == 500 and b"fail" in body)


def test_a_huge_array_is_served_or_refused_cleanly(lab: Served) -> None:
    big = lab.http.post("/devices/adder/call", json={"method": "array", "args": [2_000_000]})
    assert big.status_code == 200 and len(big.json()["result"]["data"]) == 2_000_000
    # A body over the limit is refused before it is parsed.
    too_big = b'{"method": "set_value", "args": [[' + b"1," * 6_000_000 + b"1]]}"
    assert_error(lab.http.post("/devices/adder/call", content=too_big), 413)
    assert lab.http.get("/health").is_success


def test_thousands_of_idle_connections_do_not_stop_the_server(lab: Served) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 5000  # both ends of 2,000 connections live in this process
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    url = httpx.URL(lab.url)
    assert url.host is not None and url.port is not None
    idle: list[socket.socket] = []
    streams = [SSEStream(lab.url, "/stream/events") for _ in range(20)]
    try:
        for _ in range(2000):
            idle.append(socket.create_connection((url.host, url.port), timeout=TIMEOUT))
        # Past max_connections (1000) uvicorn answers 503; nothing hangs or crashes.
        reply = httpx.post(
            f"{lab.url}/devices/adder/call", json={"method": "add", "args": [2, 3]}, timeout=TIMEOUT
        )
        assert reply.status_code in (200, 503)
        if reply.status_code == 200:
            assert reply.json()["result"] == 5.0
    finally:
        for sock in idle:
            sock.close()
        for stream in streams:
            stream.close()
    assert wait_until(
        lambda: httpx.get(f"{lab.url}/health", timeout=TIMEOUT).status_code == 200, TIMEOUT
    )
    reply = lab.http.post("/devices/adder/call", json={"method": "add", "args": [2, 3]})
    assert reply.json()["result"] == 5.0


def test_fuzzing_with_tokens_never_leaks_past_401(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = serve(tokens=TOKENS)
    lab.daemon.add_device("adder", "Adder")
    # The schema is open (it names routes, not devices); everything else needs a token.
    assert httpx.get(f"{lab.url}/openapi.json", timeout=TIMEOUT).status_code == 200
    for path in ("/devices", "/devices/adder", "/devices/nope/call", "/tasks", "/metrics"):
        assert_error(lab.http.get(path), 401)
        assert_error(lab.http.post(path, json={"method": "add"}), 401)
