"""What the server refuses before any route: foreign origins and hosts, deep JSON, too many
streams, too many connections; and CORS, closed by default and open only where asked."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

pytest.importorskip("uvicorn")

from helpers import wait_until
from labd.config import LabConfig
from labd.exceptions import ConfigError
from labd.server.guards import json_depth_exceeds
from server_support import TIMEOUT, TOKENS, Served, SSEStream, assert_error, serve  # noqa: F401

CALL = {"method": "set_value", "args": [7.0]}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def served_adder(serve: Callable[..., Served], **kwargs: object) -> Served:  # noqa: F811
    lab = serve(**kwargs)
    lab.daemon.add_device("adder", "Adder")
    return lab


# -- origins ----------------------------------------------------------------------------


def test_a_page_from_another_site_cannot_call_a_device(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = served_adder(serve)
    # A form or no-cors fetch from another site: the browser sends its Origin, and no
    # preflight, so only the server can stop it from moving the instrument.
    reply = lab.http.post(
        "/devices/adder/call",
        json=CALL,
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    error = assert_error(reply, 403, "CrossOriginRefused")
    assert error["context"] == {"origin": "https://evil.example"}
    assert lab.daemon.get_device("adder").value == 0.0
    # Every route, not only the call fast path.
    assert_error(lab.http.delete("/devices/adder", headers={"Origin": "https://evil.example"}), 403)
    assert lab.daemon.has_device("adder")
    metrics = lab.http.get("/metrics").text
    assert 'labd_requests_refused_total{reason="origin"} 2.0' in metrics


def test_the_servers_own_pages_and_allowed_origins_may_call(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = served_adder(serve, cors_origins=["https://lab.example.org"])
    own = lab.url  # the dashboard: same scheme, host and port
    assert lab.http.post("/devices/adder/call", json=CALL, headers={"Origin": own}).is_success
    reply = lab.http.post(
        "/devices/adder/call", json=CALL, headers={"Origin": "https://lab.example.org"}
    )
    assert reply.is_success
    assert reply.headers["access-control-allow-origin"] == "https://lab.example.org"
    assert_error(
        lab.http.post("/devices/adder/call", json=CALL, headers={"Origin": "https://other.org"}),
        403,
        "CrossOriginRefused",
    )


def test_cors_is_closed_by_default(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = served_adder(serve)
    reply = lab.http.options(
        "/devices/adder/call",
        headers={"Origin": "https://lab.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in reply.headers
    assert reply.status_code == 403


def test_a_preflight_from_an_allowed_origin_needs_no_token(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = served_adder(serve, tokens=TOKENS, cors_origins=["https://lab.example.org"])
    reply = lab.http.options(
        "/devices/adder/call",
        headers={
            "Origin": "https://lab.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "https://lab.example.org"
    assert "authorization" in reply.headers["access-control-allow-headers"].lower()
    # The real request still needs its token.
    assert_error(
        lab.http.post(
            "/devices/adder/call", json=CALL, headers={"Origin": "https://lab.example.org"}
        ),
        401,
    )


# -- hosts (DNS rebinding) --------------------------------------------------------------


def test_a_loopback_server_answers_only_to_loopback_host_names(
    serve: Callable[..., Served],  # noqa: F811
) -> None:
    lab = served_adder(serve)
    port = httpx.URL(lab.url).port
    # A page on evil.example whose name now resolves to 127.0.0.1: same origin to the
    # browser, so only the Host name gives it away.
    reply = lab.http.post(
        "/devices/adder/call",
        json=CALL,
        headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
    )
    assert_error(reply, 403, "HostNotAllowed")
    assert lab.daemon.get_device("adder").value == 0.0
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert lab.http.get("/health", headers={"Host": host}).is_success


def test_a_reverse_proxys_public_name_can_be_allowed(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = served_adder(serve, allowed_hosts=["lab.example.org"])
    # nginx with `proxy_set_header Host $host`, the page served through it.
    reply = lab.http.post(
        "/devices/adder/call",
        json=CALL,
        headers={"Host": "lab.example.org", "Origin": "https://lab.example.org"},
    )
    assert reply.is_success
    assert_error(lab.http.get("/health", headers={"Host": "other.example.org"}), 403)


# -- JSON depth -------------------------------------------------------------------------


def test_json_depth_check() -> None:
    assert not json_depth_exceeds(b'{"method": "m", "args": [[1, 2], [3, 4]]}', 4)
    assert not json_depth_exceeds(("[" + "1," * 10_000 + "1]").encode(), 4)
    assert json_depth_exceeds(nested(6).encode(), 5)
    assert not json_depth_exceeds(nested(5).encode(), 5)
    # Brackets inside strings count towards the quick check only; the parse decides.
    assert not json_depth_exceeds(b'{"method": "[[[[[[[[[[[[[[[[[["}', 4)
    assert json_depth_exceeds(nested(3000).encode(), 64)


@pytest.mark.parametrize("path", ["/devices/adder/call", "/devices", "/tasks"])
def test_json_nested_too_deep_is_a_400_and_reaches_nothing(
    serve: Callable[..., Served],  # noqa: F811
    path: str,
) -> None:
    lab = served_adder(serve, max_json_depth=16)
    body = '{"method": "set_value", "args": [' + nested(20) + "]}"
    error = assert_error(
        lab.http.post(path, content=body, headers={"Content-Type": "application/json"}), 400
    )
    assert "deeper than 16" in error["message"]
    assert lab.daemon.get_device("adder").value == 0.0
    # Deeper than orjson's own limit: still a 400, never a 500.
    very = '{"method": "set_value", "args": [' + nested(5000) + "]}"
    assert_error(lab.http.post(path, content=very), 400)
    assert lab.http.get("/health").is_success


# -- streams per client and connections -------------------------------------------------


def test_one_client_may_hold_only_so_many_streams(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = serve(max_streams_per_client=2)
    lab.daemon.add_device("tick", "Ticker")
    first = SSEStream(lab.url, "/stream/devices/tick")
    second = SSEStream(lab.url, "/stream/events")
    try:
        assert (first.status, second.status) == (200, 200)
        reply = lab.http.get("/stream/devices/tick")
        error = assert_error(reply, 429, "TooManyStreams")
        assert error["context"] == {"limit": 2}
        assert "labd_streams_refused_total 1.0" in lab.http.get("/metrics").text
    finally:
        first.close()
    # The closed stream's place is free again once the server has seen it go.
    streams = lab.server.app.ctx.stream_limits
    assert wait_until(lambda: streams.open_streams("addr:127.0.0.1") == 1, TIMEOUT)
    third = SSEStream(lab.url, "/stream/devices/tick")
    try:
        assert third.status == 200
    finally:
        third.close()
        second.close()


def test_a_refused_stream_start_gives_its_place_back(serve: Callable[..., Served]) -> None:  # noqa: F811
    lab = serve(max_streams_per_client=1)
    lab.daemon.add_device("broken", "Broken")
    for _ in range(3):  # each start fails; none may keep the client's one place
        assert lab.http.get("/stream/devices/broken").status_code >= 400
    assert lab.server.app.ctx.stream_limits.open_streams("addr:127.0.0.1") == 0


def test_connections_past_the_limit_get_503_and_the_server_recovers(
    serve: Callable[..., Served],  # noqa: F811
) -> None:
    lab = serve(max_connections=5)
    port = httpx.URL(lab.url).port
    assert port is not None
    idle: list[SSEStream] = []
    try:
        for _ in range(5):
            idle.append(SSEStream(lab.url, "/stream/events"))
        reply = httpx.get(f"{lab.url}/health", timeout=TIMEOUT)
        assert reply.status_code == 503
    finally:
        for stream in idle:
            stream.close()
    assert wait_until(
        lambda: httpx.get(f"{lab.url}/health", timeout=TIMEOUT).status_code == 200, TIMEOUT
    )


def test_a_header_flood_is_refused_and_the_server_keeps_serving(
    serve: Callable[..., Served],  # noqa: F811
) -> None:
    lab = serve()
    url = httpx.URL(lab.url)
    assert url.host is not None and url.port is not None
    with socket.create_connection((url.host, url.port), timeout=TIMEOUT) as sock:
        head = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"X-Flood-{i}: {'a' * 100}\r\n" for i in range(20_000))
        try:
            sock.sendall((head + "\r\n").encode())
            answer = sock.recv(65536)
        except OSError:
            answer = b""  # the server may close the connection while we still send
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert lab.http.get("/health").is_success
    many = {f"X-Many-{i}": "1" for i in range(150)}
    assert_error(lab.http.get("/health", headers=many), 431, "HeadersTooLarge")
    assert_error(lab.http.get("/health", headers={"X-Big": "a" * 70_000}), 431)


# -- configuration ----------------------------------------------------------------------


def test_cors_origins_and_stream_limits_come_from_the_lab_file(tmp_path: Path) -> None:
    good = tmp_path / "lab.toml"
    good.write_text(
        '[server]\ncors_origins = ["https://lab.example.org/"]\nmax_streams_per_client = 8\n'
        'allowed_hosts = ["lab.example.org"]\n'
    )
    options = LabConfig.load(good).server
    assert options.cors_origins == ("https://lab.example.org",)
    assert options.allowed_hosts == ("lab.example.org",)
    assert options.max_streams_per_client == 8
    for bad in (
        'cors_origins = "https://x.org"',
        'cors_origins = ["lab.example.org"]',
        "max_streams_per_client = 0",
        "allowed_hosts = [1]",
    ):
        path = tmp_path / "bad.toml"
        path.write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError):
            LabConfig.load(path)
