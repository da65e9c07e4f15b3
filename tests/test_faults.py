# ruff: noqa: F811
"""Fault injection: devices, tasks and clients that misbehave, and stops in the middle.

Each fault must end within its timeout, say which part did not finish, leave no labd
thread running that it did not name, and keep the rest of the lab serving. Finished
tasks keep their results and error records through the failures around them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import labd as ld
from helpers import labd_threads, wait_until

pytest.importorskip("uvicorn")

from server_support import TIMEOUT, Served, SSEStream, assert_error, serve  # noqa: F401

#: How long a bounded stop may take beyond its own timeout on a busy 2-core machine.
SLACK = 5.0


class Stubborn:
    """A driver whose vendor calls can hang: disconnect, stop_streaming, or neither."""

    def __init__(self, device_id: str, hang_in: str = "") -> None:
        self.device_id = device_id
        self.hang_in = hang_in
        self.release = threading.Event()
        self._callback: Any = None
        self.value = 0

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        if self.hang_in == "disconnect":
            self.release.wait(TIMEOUT)
        if self.hang_in == "disconnect-raise":
            raise OSError("USB device vanished")

    def start_streaming(self, callback: Any) -> None:
        if self.is_streaming():
            return
        self._callback = callback

    def stop_streaming(self) -> None:
        if self.hang_in == "stop":
            self.release.wait(TIMEOUT)
        if self.hang_in == "stop-raise":
            raise RuntimeError("SDK refused to stop")
        self._callback = None

    def is_streaming(self) -> bool:
        return self._callback is not None

    def set_value(self, value: int) -> None:
        self.value = value

    def _frame(self, datum: Any) -> None:
        callback = self._callback
        if callback is not None:
            callback(datum)


class Moody:
    """A task whose parameter methods raise, and which fails or finishes on request."""

    def __init__(self, task_id: str, fail: bool = False) -> None:
        self.task_id = task_id
        self.fail = fail
        self.go = threading.Event()

    def run(self, context: ld.TaskContext) -> str:
        while not self.go.is_set() and context.checkpoint():
            context.sleep(0.01)
        if self.fail:
            raise ValueError("the sample cracked")
        return "done"

    def set_parameter(self, key: str, value: Any) -> None:
        if key == "go":
            self.go.set()
            return
        raise KeyError(f"no parameter {key!r}")

    def get_parameter(self, key: str) -> Any:
        raise RuntimeError("parameters are write-only here")


@pytest.mark.allow_threads("labd-call-stub")
def test_a_hanging_disconnect_times_out_and_the_rest_keeps_working() -> None:
    daemon = ld.LabDaemon()
    stub = daemon.add_device("stub", Stubborn, hang_in="disconnect")
    other = daemon.add_device("other", Stubborn)
    try:
        daemon.connect_device("stub")
        t0 = time.monotonic()
        with pytest.raises(ld.DeviceTimeoutError, match="stub"):
            daemon.disconnect_device("stub", timeout=0.3)
        assert time.monotonic() - t0 < 0.3 + SLACK
        daemon.call_device("other", "set_value", (3,), timeout=TIMEOUT)
        assert other.value == 3
        error = daemon.get_last_error("stub")
        assert error is not None and error["type"] == "DeviceTimeoutError"
    finally:
        stub.release.set()
        daemon.shutdown(timeout=TIMEOUT)


def test_a_disconnect_that_raises_is_recorded_and_shutdown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = ld.LabDaemon()
    daemon.add_device("stub", Stubborn, hang_in="disconnect-raise")
    other = daemon.add_device("other", Stubborn)
    daemon.connect_device("stub")
    daemon.connect_device("other")
    with caplog.at_level(logging.WARNING, logger="labd"):
        daemon.shutdown(timeout=TIMEOUT)
    assert daemon.is_shut_down
    told = [r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records]
    assert any("'stub'" in line and "USB device vanished" in line for line in told), told
    assert not [t for t in labd_threads() if t.name.endswith(("-stub", "-other"))]
    assert other.value == 0


@pytest.mark.allow_threads("labd-stop-*")
def test_a_hanging_stop_streaming_is_bounded_and_subscribers_are_told() -> None:
    daemon = ld.LabDaemon()
    stub = daemon.add_device("stub", Stubborn, hang_in="stop")
    ended: list[Any] = []
    try:
        daemon.start_streaming("stub", lambda _: None, on_end=ended.append)
        t0 = time.monotonic()
        daemon.stop_streaming("stub", timeout=0.3)
        assert time.monotonic() - t0 < 0.3 + SLACK
        assert wait_until(lambda: len(ended) == 1, TIMEOUT)
        assert isinstance(ended[0], ld.DeviceTimeoutError)
        error = daemon.get_last_error("stub")
        assert error is not None and "did not return within 0.3 s" in error["message"]
        stub.release.set()  # the device's stop returns at last: the stream can start again
        assert wait_until(lambda: not daemon.device_info("stub")["streaming"], TIMEOUT)
        stub.hang_in = ""
        got: list[Any] = []
        daemon.start_streaming("stub", got.append)
        stub._frame(1)
        assert got == [1]
    finally:
        stub.release.set()
        daemon.shutdown(timeout=TIMEOUT)


def test_a_stop_streaming_that_raises_is_recorded_and_the_stream_ends() -> None:
    daemon = ld.LabDaemon()
    daemon.add_device("stub", Stubborn, hang_in="stop-raise")
    ended: list[Any] = []
    try:
        daemon.start_streaming("stub", lambda _: None, on_end=ended.append)
        daemon.stop_streaming("stub", timeout=TIMEOUT)
        assert wait_until(lambda: len(ended) == 1, TIMEOUT)
        error = daemon.get_last_error("stub")
        assert error is not None and "refused to stop" in error["message"]
        assert daemon.device_info("stub")["streaming"] is False
    finally:
        daemon.shutdown(timeout=TIMEOUT)


def test_a_subscriber_that_raises_or_hangs_never_stalls_the_others() -> None:
    daemon = ld.LabDaemon()
    stub = daemon.add_device("stub", Stubborn)
    stuck = threading.Event()
    good: list[int] = []

    def raises(datum: int) -> None:
        raise ZeroDivisionError("analysis bug")

    def hangs(datum: int) -> None:
        stuck.wait(TIMEOUT)

    try:
        daemon.start_streaming("stub", raises)
        slow = daemon.start_streaming("stub", hangs, queue_size=4)
        daemon.start_streaming("stub", good.append)
        t0 = time.monotonic()
        for i in range(1000):
            stub._frame(i)
        assert time.monotonic() - t0 < SLACK  # the device thread never waited
        assert good == list(range(1000))
        assert wait_until(lambda: slow.dropped >= 1000 - 5, TIMEOUT)
        error = daemon.get_last_error("stub")
        assert error is not None and error["origin"] == "callback"
    finally:
        stuck.set()
        daemon.shutdown(timeout=TIMEOUT)


# -- tasks ------------------------------------------------------------------------------


@pytest.fixture
def tasks_lab(serve: Callable[..., Served]) -> Served:
    lab = serve()
    lab.daemon.register_plugins(tasks={"Moody": Moody})
    return lab


def test_task_parameter_methods_that_raise_answer_clearly_and_the_task_runs_on(
    tasks_lab: Served,
) -> None:
    http = tasks_lab.http
    assert http.post("/tasks", json={"task_id": "m1", "task_type": "Moody"}).status_code == 201
    bad = http.post("/tasks/m1/parameters", json={"key": "speed", "value": 3})
    assert 400 <= bad.status_code < 600 and bad.status_code != 503
    error = assert_error(bad, bad.status_code)
    assert "speed" in error["message"]
    read = http.get("/tasks/m1/parameters/speed")
    error = assert_error(read, 500)
    assert error["origin"] == "task" and "write-only" in error["message"]
    assert http.get("/tasks/m1").json()["status"] == "running"
    assert http.post("/tasks/m1/parameters", json={"key": "go", "value": True}).is_success
    handle = tasks_lab.daemon.get_task("m1")
    assert handle.wait(TIMEOUT) == "done"


def test_results_and_errors_of_finished_tasks_survive_the_failures_around_them(
    tasks_lab: Served,
) -> None:
    http, daemon = tasks_lab.http, tasks_lab.daemon
    daemon.add_device("stub", Stubborn, hang_in="disconnect-raise")
    for task_id, fail in (("ok1", False), ("bad1", True)):
        body = {"task_id": task_id, "task_type": "Moody", "params": {"fail": fail}}
        assert http.post("/tasks", json=body).status_code == 201
        http.post(f"/tasks/{task_id}/parameters", json={"key": "go", "value": 1})
    assert wait_until(lambda: not daemon.get_task("bad1").is_running(), TIMEOUT)
    assert wait_until(lambda: not daemon.get_task("ok1").is_running(), TIMEOUT)
    # Failures around them: a device that raises, bad requests, a client that leaves.
    http.post("/devices/stub/connect")
    http.post("/devices/stub/disconnect")
    http.post("/devices/stub/call", content=b"{not json")
    SSEStream(tasks_lab.url, "/stream/events").close()
    first_error = http.get("/tasks/bad1/error").json()["error"]
    assert http.get("/tasks/ok1").json()["result"] == "done"
    assert first_error["message"] == "the sample cracked"
    assert http.get("/tasks/bad1/error").json()["error"] == first_error  # stable


# -- clients that leave -----------------------------------------------------------------


def test_a_client_that_leaves_mid_response_costs_nothing(serve: Callable[..., Served]) -> None:
    lab = serve()
    lab.daemon.add_device("adder", "Adder")
    url = httpx.URL(lab.url)
    assert url.host is not None and url.port is not None
    body = b'{"method": "array", "args": [3000000]}'
    for _ in range(5):
        with socket.create_connection((url.host, url.port), timeout=TIMEOUT) as sock:
            sock.sendall(
                f"POST /devices/adder/call HTTP/1.1\r\nHost: {url.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            sock.recv(1024)  # the answer has begun; leave without reading it
    reply = lab.http.post("/devices/adder/call", json={"method": "add", "args": [1, 1]})
    assert reply.json()["result"] == 2.0
    assert lab.daemon.get_last_error("adder") is None
    assert "labd_device_calls_total" in lab.http.get("/metrics").text


def test_a_client_that_leaves_mid_request_body_reaches_nothing(
    serve: Callable[..., Served],
) -> None:
    lab = serve()
    adder = lab.daemon.add_device("adder", "Adder")
    url = httpx.URL(lab.url)
    assert url.host is not None and url.port is not None
    with socket.create_connection((url.host, url.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            f"POST /devices/adder/call HTTP/1.1\r\nHost: {url.host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"method": "set_value", "args": [9'.encode()
        )
    assert lab.http.get("/health").is_success
    assert adder.value == 0.0


# -- stopping with everything in flight -------------------------------------------------


@pytest.mark.allow_threads("labd-call-adder")
def test_server_stop_and_shutdown_with_streams_tasks_and_a_hung_call(
    serve: Callable[..., Served],
    caplog: pytest.LogCaptureFixture,
) -> None:
    lab = serve(call_timeout=60.0)
    daemon = lab.daemon
    daemon.register_plugins(tasks={"Moody": Moody})
    adder = daemon.add_device("adder", "Adder")
    daemon.add_device("tick", "Ticker")
    streams = [SSEStream(lab.url, "/stream/devices/tick") for _ in range(3)]
    streams.append(SSEStream(lab.url, "/stream/events"))
    assert lab.http.post("/tasks", json={"task_id": "m", "task_type": "Moody"}).status_code == 201
    hung: list[Any] = []

    def call_hang() -> None:
        try:
            hung.append(
                httpx.post(
                    f"{lab.url}/devices/adder/call", json={"method": "hang"}, timeout=TIMEOUT
                )
            )
        except httpx.HTTPError as exc:
            hung.append(exc)

    caller = threading.Thread(target=call_hang)
    caller.start()
    try:
        assert adder.entered.wait(TIMEOUT)
        t0 = time.monotonic()
        lab.server.stop()
        assert time.monotonic() - t0 < 10.0 + SLACK
        assert not lab.server.running
        caller.join(TIMEOUT)
        assert hung  # the waiting client got an answer or a closed connection
        with caplog.at_level(logging.WARNING, logger="labd"):
            t0 = time.monotonic()
            daemon.shutdown(timeout=1.0)
            assert time.monotonic() - t0 < 1.0 + SLACK
        assert not daemon.get_task("m").is_running()
        lines = [r.getMessage() for r in caplog.records]
        assert any("adder" in line and "labd-call" in line for line in lines), lines
        left = [t.name for t in labd_threads()]
        assert [name for name in left if name != "labd-call-adder"] == []
    finally:
        adder.release.set()
        for stream in streams:
            stream.close()
    assert wait_until(lambda: not labd_threads(), TIMEOUT)
