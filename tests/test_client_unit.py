"""Client tests without a labd server: SSE framing, error mapping, proxies, stream control."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from helpers import wait_until
from labd.client import (
    Backoff,
    DeviceBusyError,
    ServerAPI,
    ServerAPIError,
    ServerConnectionError,
    SSEClient,
    SSEEvent,
    SSEParser,
)
from labd.patterns import ensure_device, ensure_server
from labd.wire import decode_json, encode_json

BASE = "http://labd.test"


def sse_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labd-sse-client")]


@pytest.fixture(autouse=True)
def _no_leaked_sse_threads() -> Iterator[None]:
    yield
    assert wait_until(lambda: not sse_threads(), timeout=10.0)


def error_body(kind: str, message: str, **context: Any) -> dict[str, Any]:
    return {
        "error": {
            "type": kind,
            "message": message,
            "origin": "framework",
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "traceback": None,
            "context": context,
        }
    }


def json_response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(
        status, content=encode_json(body), headers={"content-type": "application/json"}
    )


def sse_bytes(*frames: tuple[str, dict[str, Any], int | None]) -> bytes:
    out = b""
    for event, data, event_id in frames:
        if event_id is not None:
            out += f"id: {event_id}\n".encode()
        out += f"event: {event}\n".encode() + b"data: " + encode_json(data) + b"\n\n"
    return out


def datum(sequence: int, payload: Any = None, run: int = 1) -> tuple[str, dict[str, Any], int]:
    envelope = {
        "event": "device_data",
        "device_id": "daq",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "sequence": sequence,
        "run": run,
        "payload": sequence if payload is None else payload,
    }
    return ("device_data", envelope, sequence)


def stream_response(body: bytes | httpx.SyncByteStream, status: int = 200) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, stream=body, headers=headers)


# ---- SSE parser ---------------------------------------------------------------------------


def parse_all(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_parser_reads_named_events_with_ids() -> None:
    events = parse_all([b'id: 7\nevent: device_data\ndata: {"a": 1}\n\n'])
    assert events == [SSEEvent("device_data", '{"a": 1}', "7")]


def test_parser_gives_same_events_whatever_the_chunk_boundaries() -> None:
    stream = (
        b"\xef\xbb\xbf: ping\r\n\r\nid: 1\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\n"
        b'data: x\rdata: y\r\rid: 3\nevent: b\ndata: {"k": [1, 2]}\n\n'
    )
    expected = parse_all([stream])
    assert expected == [
        SSEEvent("a", "one\ntwo", "1"),
        SSEEvent("message", "x\ny", "1"),
        SSEEvent("b", '{"k": [1, 2]}', "3"),
    ]
    for cut in range(1, len(stream)):
        assert parse_all([stream[:cut], stream[cut:]]) == expected, cut
    assert parse_all([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_parser_crlf_split_between_chunks_is_one_line_end() -> None:
    events = parse_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [SSEEvent("message", "a\nb", None)]


def test_parser_comments_are_skipped_and_counted() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping\n\n:another\n\n") == []
    assert parser.comments == 2


def test_parser_field_rules() -> None:
    parser = SSEParser()
    events = parser.feed(b"data\ndata:  two spaces\nretry: 1500\nid: a\0b\nunknown: x\n\n")
    assert events == [SSEEvent("message", "\n two spaces", None)]
    assert parser.retry_ms == 1500
    parser.feed(b"retry: soon\nid: 9\n\n")
    assert parser.retry_ms == 1500
    assert parser.last_event_id == "9"
    # The id persists for later events until changed.
    assert parser.feed(b"data: z\n\n") == [SSEEvent("message", "z", "9")]


def test_parser_event_without_data_is_not_dispatched_and_resets_name() -> None:
    assert parse_all([b"event: lonely\n\ndata: x\n\n"]) == [SSEEvent("message", "x", None)]


def test_parser_holds_incomplete_event_until_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: part") == []
    assert parser.feed(b"ial\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "partial", None)]


# ---- backoff ------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial=0.25, maximum=3.0, jitter=0.2, rand=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.25


def test_backoff_jitter_only_shortens() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.5, rand=lambda: 0.999)
    delays = [backoff.next_delay() for _ in range(5)]
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 8.0, 8.0], strict=True):
        assert base * 0.5 <= delay < base
    many = Backoff(initial=1.0, maximum=5.0)
    assert all(0.0 < many.next_delay() <= 5.0 for _ in range(200))


# ---- ServerAPI ----------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler that records requests and answers from a route table."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return json_response(404, error_body("NotFound", f"no route {request.url.path}"))
        return handler(request)

    def api(self, **options: Any) -> ServerAPI:
        return ServerAPI(BASE, transport=httpx.MockTransport(self), **options)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "ValidationError"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "UnknownDeviceError"),
        (409, "DuplicateDeviceError"),
        (500, "RuntimeError"),
        (504, "DeviceTimeoutError"),
    ],
)
def test_http_errors_become_server_api_errors(status: int, kind: str) -> None:
    body = error_body(kind, "the server's own words", device_id="laser1")
    recorder = Recorder({("GET", "/devices/laser1"): lambda r: json_response(status, body)})
    with recorder.api() as api, pytest.raises(ServerAPIError) as caught:
        api.get_device("laser1")
    exc = caught.value
    assert type(exc) is (DeviceBusyError if status == 409 else ServerAPIError)
    assert exc.status_code == status
    assert exc.error["type"] == kind
    assert exc.error["context"] == {"device_id": "laser1"}
    assert "the server's own words" in str(exc)
    assert str(status) in str(exc)


@pytest.mark.parametrize(
    "body",
    [
        error_body("DeviceBusy", "a call is still running"),
        error_body("DeviceOwnedError", "owned by task sweep", owner="sweep"),
        error_body("TaskNotRunning", "task 't1' is not running (completed)"),
    ],
)
def test_every_409_is_device_busy_error_with_the_reason_in_error_type(body: dict[str, Any]) -> None:
    recorder = Recorder({("POST", "/devices/laser1/call"): lambda r: json_response(409, body)})
    with recorder.api() as api, pytest.raises(DeviceBusyError) as caught:
        api.call_device_method("laser1", "set_power", [1.0])
    assert caught.value.status_code == 409
    assert body["error"]["message"] in str(caught.value)


def test_error_without_json_body_keeps_status_and_text() -> None:
    recorder = Recorder({("GET", "/health"): lambda r: httpx.Response(502, text="bad gateway")})
    with recorder.api() as api, pytest.raises(ServerAPIError) as caught:
        api.health()
    assert caught.value.status_code == 502
    assert caught.value.error == {}
    assert "bad gateway" in str(caught.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ServerAPI(url, timeout=2.0) as api, pytest.raises(ServerConnectionError) as caught:
        api.list_devices()
    assert url in str(caught.value)
    assert isinstance(caught.value, ServerAPIError)


def test_transport_timeout_is_a_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    transport = httpx.MockTransport(handler)
    expected = pytest.raises(ServerConnectionError, match="did not answer")
    with ServerAPI(BASE, transport=transport) as api, expected:
        api.get_task("t")


def test_requests_carry_token_and_spec_bodies() -> None:
    info = {"device_id": "laser1", "device_type": "TunableLaser", "connected": True}
    recorder = Recorder(
        {
            ("GET", "/devices"): lambda r: json_response(200, {"devices": [info]}),
            ("POST", "/devices"): lambda r: json_response(201, info),
            ("POST", "/devices/laser1/call"): lambda r: json_response(
                200, {"result": [1, 2], "success": True}
            ),
            ("POST", "/tasks"): lambda r: json_response(
                201, {"task_id": "s", "device_ids": [], "status": "started"}
            ),
            ("POST", "/tasks/s/parameters"): lambda r: json_response(200, {}),
            ("GET", "/tasks/s/parameters/step_nm"): lambda r: json_response(
                200, {"key": "step_nm", "value": 0.5}
            ),
            ("POST", "/devices/laser1/streaming/start"): lambda r: json_response(200, info),
            ("DELETE", "/devices/laser1"): lambda r: httpx.Response(204),
            ("GET", "/metrics"): lambda r: httpx.Response(200, text="labd_up 1\n"),
        }
    )
    with recorder.api(token="s3cret") as api:
        assert api.list_devices() == [info]
        assert api.add_device("laser1", "TunableLaser", wavelength_nm=1550.0) == info
        result = api.call_device_method("laser1", "f", args=(1,), kwargs={"x": 2}, timeout=3)
        assert result == [1, 2]
        assert api.execute_task("s", "Sweep", {"n": 3})["status"] == "started"
        api.set_task_parameter("s", "step_nm", 0.5)
        assert api.get_task_parameter("s", "step_nm") == 0.5
        api.start_streaming("laser1", rate_hz=5)
        api.remove_device("laser1")
        assert api.metrics() == "labd_up 1\n"
    bodies = [decode_json(r.content) if r.content else None for r in recorder.requests]
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in recorder.requests)
    assert "s3cret" not in str([str(r.url) for r in recorder.requests])
    assert bodies[1] == {
        "device_id": "laser1",
        "device_type": "TunableLaser",
        "params": {"wavelength_nm": 1550.0},
    }
    assert bodies[2] == {"method": "f", "args": [1], "kwargs": {"x": 2}, "timeout": 3}
    assert bodies[3] == {"task_id": "s", "task_type": "Sweep", "params": {"n": 3}}
    assert bodies[4] == {"key": "step_nm", "value": 0.5}
    assert bodies[6] == {"kwargs": {"rate_hz": 5}}


def test_error_records_are_none_on_404() -> None:
    record = error_body("ValueError", "bad wavelength")
    recorder = Recorder(
        {
            ("GET", "/devices/a/error"): lambda r: json_response(200, record),
            ("GET", "/devices/b/error"): lambda r: json_response(404, error_body("NoError", "-")),
            ("GET", "/tasks/t/error"): lambda r: json_response(404, error_body("NoError", "-")),
        }
    )
    with recorder.api() as api:
        assert api.get_device_error("a") == record["error"]
        assert api.get_device_error("b") is None
        assert api.get_task_error("t") is None


def task_info(status: str, result: Any = None, exception: Any = None) -> dict[str, Any]:
    return {
        "task_id": "t",
        "task_type": "Sweep",
        "device_ids": [],
        "status": status,
        "running": status in ("running", "paused"),
        "paused": status == "paused",
        "progress": None,
        "message": None,
        "result": result,
        "exception": exception,
        "started_at": None,
        "finished_at": None,
    }


def test_wait_task_returns_when_the_stream_reports_a_final_status() -> None:
    polls = []

    def get_task(request: httpx.Request) -> httpx.Response:
        polls.append(request)
        return json_response(200, task_info("running" if len(polls) == 1 else "completed", 42))

    final = sse_bytes(("task_status", {"task_id": "t", "status": "completed"}, None))
    recorder = Recorder(
        {
            ("GET", "/tasks/t"): get_task,
            ("GET", "/stream/tasks/t"): lambda r: stream_response(final),
        }
    )
    with recorder.api() as api:
        started = time.monotonic()
        info = api.wait_task("t", timeout=30, poll_interval=20.0)
    assert info["status"] == "completed"
    assert info["result"] == 42
    assert time.monotonic() - started < 15.0  # woken by the stream, not the 20 s poll


def test_wait_task_polls_when_stream_is_refused_and_times_out() -> None:
    recorder = Recorder({("GET", "/tasks/t"): lambda r: json_response(200, task_info("running"))})
    with recorder.api() as api, pytest.raises(TimeoutError, match="still running"):
        api.wait_task("t", timeout=0.3, poll_interval=0.05)
    assert sum(r.url.path == "/tasks/t" for r in recorder.requests) >= 3


# ---- proxies ------------------------------------------------------------------------------


def proxy_recorder(call: Callable[[dict[str, Any]], httpx.Response]) -> Recorder:
    methods = [
        {"name": n, "parameters": [], "returns": None, "doc": f"{n} doc", "query": False}
        for n in ("set_wavelength", "get_wavelength", "explode")
    ]
    info = {"device_id": "laser1", "device_type": "T", "connected": True, "streaming": False}
    return Recorder(
        {
            ("GET", "/devices/laser1"): lambda r: json_response(200, info),
            ("GET", "/devices/laser1/methods"): lambda r: json_response(200, {"methods": methods}),
            ("POST", "/devices/laser1/call"): lambda r: call(decode_json(r.content)),
        }
    )


def test_proxy_calls_remote_methods_and_lists_them() -> None:
    recorder = proxy_recorder(lambda body: json_response(200, {"result": body, "success": True}))
    with recorder.api() as api:
        laser = api.daemon().get_device("laser1")
        assert laser.device_id == "laser1"
        assert laser.set_wavelength(1550.0, fine=True) == {
            "method": "set_wavelength",
            "args": [1550.0],
            "kwargs": {"fine": True},
        }
        assert {"set_wavelength", "get_wavelength", "explode"} <= set(dir(laser))
        assert laser.get_wavelength.__doc__ == "get_wavelength doc"
        calls = len(recorder.requests)
        with pytest.raises(AttributeError, match="no public method 'nonsense'"):
            laser.nonsense()
        with pytest.raises(AttributeError):
            laser._private()
        assert not hasattr(laser, "__array__")
        assert len(recorder.requests) == calls  # checked locally, no call sent


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected"),
    [
        (500, "ValueError", "wavelength out of range", ValueError),
        (500, "KeyError", "'missing'", KeyError),
        (400, "TypeError", "unexpected keyword 'x'", TypeError),
        (500, "RuntimeError", "laser interlock", RuntimeError),
        (504, "DeviceTimeoutError", "call exceeded 1 s", TimeoutError),
        (500, "ZeroDivisionError", "division by zero", ServerAPIError),
        (409, "DeviceBusy", "busy", DeviceBusyError),
    ],
)
def test_proxy_reraises_builtin_errors(
    status: int, kind: str, message: str, expected: type[Exception]
) -> None:
    recorder = proxy_recorder(lambda body: json_response(status, error_body(kind, message)))
    with recorder.api() as api, pytest.raises(expected) as caught:
        api.device("laser1").explode()
    exc = caught.value
    if expected is KeyError:
        assert exc.args == ("missing",)
    elif isinstance(exc, ServerAPIError):
        assert exc.status_code == status
        assert message in str(exc)
    else:
        assert str(exc) == message
        assert isinstance(exc.__cause__, ServerAPIError)


# ---- SSE client ---------------------------------------------------------------------------


class EndlessBody(httpx.SyncByteStream):
    """An endless SSE body that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while not self.closed.is_set():
            yield sse_bytes(datum(self.sent))
            self.sent += 1

    def close(self) -> None:
        self.closed.set()


def sse_client(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> SSEClient:
    options.setdefault("backoff_initial", 0.01)
    return SSEClient(BASE, transport=httpx.MockTransport(handler), **options)


def test_iterator_stops_and_closes_on_break() -> None:
    body = EndlessBody()
    client = sse_client(lambda r: stream_response(body))
    seen = []
    for event in client.iter_device_stream("daq"):
        seen.append(event["payload"])
        if len(seen) == 3:
            break
    assert seen == [0, 1, 2]
    assert body.closed.is_set()


def test_iterator_close_in_with_block() -> None:
    body = EndlessBody()
    client = sse_client(lambda r: stream_response(body))
    with client.iter_device_stream("daq") as stream:
        assert next(stream)["sequence"] == 0
    assert body.closed.is_set()
    assert stream.closed
    with pytest.raises(StopIteration):
        next(stream)


def test_reconnect_sends_last_event_id_and_skips_duplicates() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return stream_response(sse_bytes(datum(0), datum(1)))  # then the connection drops
        if len(requests) == 2:
            return json_response(503, error_body("Unavailable", "restarting"))
        end = ("stream_end", {"device_id": "daq"}, None)
        return stream_response(sse_bytes(datum(1), datum(2), end))

    events = list(sse_client(handler).iter_device_stream("daq"))
    assert [e.get("sequence") for e in events] == [0, 1, 2, None]
    assert events[-1] == {"device_id": "daq", "event": "stream_end"}
    assert "last-event-id" not in requests[0].headers
    assert requests[1].headers["last-event-id"] == "1"
    assert requests[2].headers["last-event-id"] == "1"
    assert requests[0].headers["accept"] == "text/event-stream"


def test_new_run_is_not_mistaken_for_duplicates() -> None:
    body = sse_bytes(datum(0), datum(1), datum(0, run=2), ("stream_end", {"device_id": "d"}, None))
    events = list(sse_client(lambda r: stream_response(body)).iter_device_stream("daq"))
    assert [(e.get("run"), e.get("sequence")) for e in events[:3]] == [(1, 0), (1, 1), (2, 0)]


def test_task_stream_ends_on_final_status_and_keeps_event_names() -> None:
    body = sse_bytes(
        ("task_progress", {"task_id": "t", "progress": 0.5, "message": None, "data": {}}, None),
        ("task_status", {"task_id": "t", "status": "completed"}, None),
        ("task_progress", {"task_id": "t", "progress": 1.0}, None),
    )
    events = list(sse_client(lambda r: stream_response(body)).iter_task_stream("t"))
    assert [e["event"] for e in events] == ["task_progress", "task_status"]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_4xx_on_connect_raises_from_iterator_without_retry(status: int) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return json_response(status, error_body("Nope", "not for you"))

    with pytest.raises(ServerAPIError) as caught:
        list(sse_client(handler).iter_device_stream("ghost"))
    assert caught.value.status_code == status
    assert len(requests) == 1


def test_callback_form_reports_4xx_to_on_error_and_stops() -> None:
    errors: list[Exception] = []
    failed = threading.Event()
    names: list[str] = []

    def on_error(exc: Exception) -> None:
        names.append(threading.current_thread().name)
        errors.append(exc)
        failed.set()

    client = sse_client(
        lambda r: json_response(404, error_body("UnknownDeviceError", "no device 'x'")),
        on_error=on_error,
    )
    client.start_device_stream("x")
    assert failed.wait(10)
    assert wait_until(lambda: not client.is_running())
    assert isinstance(errors[0], ServerAPIError) and errors[0].status_code == 404
    assert names == ["labd-sse-client-device-x"]
    client.stop_stream()


def test_callback_form_delivers_envelopes_and_survives_a_failing_callback() -> None:
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        got.append(event)
        if event["event"] == "stream_end":
            done.set()
        if event.get("sequence") == 0:
            raise RuntimeError("callback bug")

    body = sse_bytes(
        datum(0), datum(1, payload=[1.5, 2.5]), ("stream_end", {"device_id": "d"}, None)
    )
    client = sse_client(lambda r: stream_response(body), on_event=on_event)
    client.start_device_stream("daq")
    assert done.wait(10)
    client.stop_stream(timeout=5)
    assert [e["event"] for e in got] == ["device_data", "device_data", "stream_end"]
    assert got[1]["payload"] == [1.5, 2.5]
    assert got[1]["device_id"] == "daq"


class IdleSSEServer:
    """A raw TCP server that answers an SSE request with headers and one ping, then idles."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name="test-idle-sse", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n8\r\n: ping\n\n\r\n"
            )
            self.connections.append(conn)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for conn in self.connections:
            conn.close()
        self.thread.join(5)


@pytest.fixture
def idle_server() -> Iterator[IdleSSEServer]:
    server = IdleSSEServer()
    yield server
    server.close()


def test_stop_stream_returns_promptly_while_the_connection_is_idle(
    idle_server: IdleSSEServer,
) -> None:
    client = SSEClient(idle_server.url, read_timeout=60.0)
    client.start_device_stream("daq")
    assert wait_until(lambda: idle_server.connections)
    started = time.monotonic()
    client.stop_stream(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert not client.is_running()


def test_iterator_closed_from_another_thread_while_blocked(idle_server: IdleSSEServer) -> None:
    stream = SSEClient(idle_server.url, read_timeout=60.0).iter_event_stream()
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(list(stream)), name="test-reader")
    reader.start()
    assert wait_until(lambda: idle_server.connections)
    stream.close()
    reader.join(5)
    assert not reader.is_alive()
    assert result == [[]]


def test_second_start_on_a_running_client_is_refused(idle_server: IdleSSEServer) -> None:
    client = SSEClient(idle_server.url)
    client.start_event_stream()
    try:
        with pytest.raises(RuntimeError, match="stop_stream"):
            client.start_device_stream("daq")
    finally:
        client.stop_stream()


# ---- patterns -----------------------------------------------------------------------------


def test_ensure_server_is_false_when_nothing_listens() -> None:
    assert ensure_server(f"http://127.0.0.1:{free_port()}", timeout=1.0) is False
    assert ensure_server("not a url", timeout=1.0) is False


def test_ensure_device_adds_then_connects_only_when_needed() -> None:
    state: dict[str, Any] = {}

    def get(request: httpx.Request) -> httpx.Response:
        if not state:
            return json_response(404, error_body("UnknownDeviceError", "no device 'm'"))
        return json_response(200, state)

    def add(request: httpx.Request) -> httpx.Response:
        body = decode_json(request.content)
        state.update(device_id=body["device_id"], device_type=body["device_type"], connected=False)
        state["params"] = body["params"]
        return json_response(201, state)

    def connect(request: httpx.Request) -> httpx.Response:
        state["connected"] = True
        return json_response(200, state)

    recorder = Recorder(
        {
            ("GET", "/devices/m"): get,
            ("POST", "/devices"): add,
            ("POST", "/devices/m/connect"): connect,
        }
    )
    with recorder.api() as api:
        info = ensure_device(api, "m", "PowerMeter", averaging=4)
        assert info["connected"] is True
        assert state["params"] == {"averaging": 4}
        first = len(recorder.requests)
        assert ensure_device(api, "m", "PowerMeter")["connected"] is True
        assert len(recorder.requests) == first + 1  # one GET, nothing else


# ---- packaging ----------------------------------------------------------------------------


def test_importing_the_clients_never_imports_the_server_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, labd.client, labd.patterns\n"
        "from labd.server import SSEClient, ServerAPI, ServerAPIError\n"
        "frameworks = ('fastapi', 'starlette', 'uvicorn')\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in frameworks]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_client_all_is_importable() -> None:
    import labd.client

    assert sorted(labd.client.__all__) == sorted(set(labd.client.__all__))
    for name in labd.client.__all__:
        assert getattr(labd.client, name) is not None
