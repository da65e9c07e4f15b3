"""The HTTP API against a real server on a loopback port: every endpoint and status code."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

import labd as ld
from helpers import wait_until
from labd.server import LabDaemonServer
from labd.server.app import create_app
from labd.wire import parse_timestamp
from server_support import (
    GATES,
    TIMEOUT,
    TOKENS,
    Adder,
    Served,
    assert_error,
    serve,
)

__all__ = ["serve"]  # re-exported fixture


@pytest.fixture
def lab(serve: Callable[..., Served]) -> Served:
    served = serve()
    served.daemon.add_device("adder", "Adder")
    served.daemon.add_device("pusher", "Pusher")
    return served


def post(lab: Served, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return lab.http.post(path, json=body, **kwargs)


def timestamps(value: Any) -> Iterator[str]:
    """Every string under a key named ``timestamp`` or ending in ``_at``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (key == "timestamp" or key.endswith("_at")):
                yield item
            else:
                yield from timestamps(item)
    elif isinstance(value, list):
        for item in value:
            yield from timestamps(item)


def assert_utc(body: Any) -> int:
    found = list(timestamps(body))
    for text in found:
        assert text.endswith("Z"), text
        parse_timestamp(text)  # raises without an offset
    return len(found)


# -- server basics -------------------------------------------------------------------------


def test_health_and_index(lab: Served) -> None:
    health = lab.http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert assert_utc(health.json()) == 1

    index = lab.http.get("/").json()
    assert index["name"] == "labd"
    assert index["version"]
    for endpoint in (
        "GET /health",
        "GET /devices",
        "POST /devices/{device_id}/call",
        "DELETE /devices/{device_id}",
        "POST /tasks",
        "GET /task-types",
        "GET /stream/devices/{device_id}",
        "GET /stream/events",
        "GET /metrics",
    ):
        assert endpoint in index["endpoints"]


def test_unknown_routes_and_methods_use_the_error_schema(lab: Served) -> None:
    assert_error(lab.http.get("/no/such/thing"), 404)
    assert_error(lab.http.post("/devices/adder/frobnicate", json={}), 404)
    assert_error(lab.http.put("/devices"), 405)


def test_non_loopback_bind_without_tokens_is_refused() -> None:
    from labd import LabDaemon

    daemon = LabDaemon()
    try:
        with pytest.raises(ValueError) as info:
            LabDaemonServer(daemon, host="0.0.0.0", port=0)
        assert "tokens" in str(info.value)
        assert "allow_remote_without_auth" in str(info.value)
        # Either opt-in is accepted (nothing is bound until start()).
        LabDaemonServer(daemon, host="0.0.0.0", port=0, tokens=TOKENS)
        LabDaemonServer(daemon, host="0.0.0.0", port=0, allow_remote_without_auth=True)
        LabDaemonServer(daemon, host="localhost", port=0)
    finally:
        daemon.shutdown()


# -- devices ------------------------------------------------------------------------------


def test_device_lifecycle_over_http(lab: Served) -> None:
    created = post(
        lab, "/devices", {"device_id": "a2", "device_type": "Adder", "params": {"offset": 1}}
    )
    assert created.status_code == 201
    info = created.json()
    assert info == {
        "device_id": "a2",
        "device_type": "Adder",
        "connected": False,
        "streaming": False,
        "owned_by": None,
        "last_error": None,
    }
    assert lab.daemon.get_device("a2").offset == 1

    assert_error(post(lab, "/devices", {"device_id": "a2", "device_type": "Adder"}), 409)
    err = assert_error(post(lab, "/devices", {"device_id": "a3", "device_type": "Nope"}), 404)
    assert "Nope" in err["message"]
    # Over HTTP only registered names are accepted, never an import path.
    assert_error(
        post(lab, "/devices", {"device_id": "a3", "device_type": "labd.sim:PowerMeter"}), 404
    )
    assert_error(
        post(lab, "/devices", {"device_id": "a3", "device_type": "Adder", "params": {"bogus": 1}}),
        400,
    )
    assert "a3" not in lab.daemon.list_devices()

    ids = [d["device_id"] for d in lab.http.get("/devices").json()["devices"]]
    assert ids == ["adder", "pusher", "a2"]
    assert lab.http.get("/devices/a2").json()["device_id"] == "a2"
    assert_error(lab.http.get("/devices/ghost"), 404)
    assert_error(lab.http.get("/devices/ghost/methods"), 404)

    connected = post(lab, "/devices/a2/connect")
    assert connected.status_code == 200 and connected.json()["connected"] is True
    assert lab.daemon.get_device("a2").connected
    disconnected = post(lab, "/devices/a2/disconnect")
    assert disconnected.status_code == 200 and disconnected.json()["connected"] is False
    assert_error(post(lab, "/devices/ghost/connect"), 404)
    assert_error(post(lab, "/devices/ghost/disconnect"), 404)

    assert lab.http.delete("/devices/a2").status_code == 204
    assert_error(lab.http.get("/devices/a2"), 404)
    assert_error(lab.http.delete("/devices/a2"), 404)


def test_methods_describe_parameters_and_queries(lab: Served) -> None:
    methods = {m["name"]: m for m in lab.http.get("/devices/adder/methods").json()["methods"]}
    assert "hang" in methods and "_fill" not in methods
    add = methods["add"]
    assert add["doc"] == "Add two numbers and the offset."
    assert add["returns"] == "float"
    assert add["query"] is False
    a, b = add["parameters"]
    assert a == {
        "name": "a",
        "kind": "positional_or_keyword",
        "required": True,
        "default": None,
        "annotation": "float",
        "choices": None,
    }
    assert b["required"] is False and b["default"] == 0.0
    assert methods["get_value"]["query"] is True
    assert methods["peek"]["query"] is True  # marked with @labd.query
    assert methods["set_value"]["query"] is False


def test_connect_failure_is_500_and_recorded(lab: Served) -> None:
    lab.daemon.get_device("adder").fail_connect = True
    err = assert_error(post(lab, "/devices/adder/connect"), 500)
    assert err["origin"] == "device"
    assert "unplugged" in err["message"]
    assert lab.http.get("/devices/adder").json()["last_error"]["message"]


def test_connect_timeout_is_504(serve: Callable[..., Served], allow_threads: Any) -> None:
    lab = serve(call_timeout=0.5)
    device = lab.daemon.add_device("slow", "Adder")
    device.hang_connect = True
    try:
        err = assert_error(post(lab, "/devices/slow/connect"), 504, "DeviceTimeoutError")
        assert "slow" in err["message"]
    finally:
        device.release.set()
    # The late connect() is undone once it returns.
    assert wait_until(lambda: not lab.daemon.get_device("slow").connected, TIMEOUT)


def test_call_results_and_errors(lab: Served) -> None:
    ok = post(lab, "/devices/adder/call", {"method": "add", "args": [1, 2]})
    assert ok.status_code == 200
    assert ok.json() == {"result": 3, "success": True}
    assert (
        post(lab, "/devices/adder/call", {"method": "add", "kwargs": {"a": 1, "b": 4}}).json()[
            "result"
        ]
        == 5
    )
    numpy = post(lab, "/devices/adder/call", {"method": "array", "args": [3]}).json()["result"]
    assert numpy == {"data": [0, 1, 2], "mean": 1.5, "count": 3}

    for method in ("_fill", "nope", "unit", "offset", "__init__"):
        err = assert_error(post(lab, "/devices/adder/call", {"method": method}), 400)
        assert method in err["message"]
    err = assert_error(post(lab, "/devices/adder/call", {"method": "add", "args": [1, 2, 3]}), 400)
    assert "add" in err["message"]
    assert_error(post(lab, "/devices/adder/call", {"method": "add", "kwargs": {"c": 1}}), 400)
    assert_error(post(lab, "/devices/adder/call", {"method": "add"}), 400)
    assert_error(post(lab, "/devices/ghost/call", {"method": "add"}), 404)

    failed = assert_error(post(lab, "/devices/adder/call", {"method": "fail"}), 500, "ValueError")
    assert failed["origin"] == "device"
    assert "bad value" in failed["message"]
    assert "ValueError" in failed["traceback"]
    assert failed["context"]["method"] == "fail"


def test_device_ids_that_need_escaping_reach_their_device(lab: Served) -> None:
    # ASGI hands the app a decoded path: the id must not be decoded a second time.
    for device_id in ("stage x", "50%41", "über"):
        lab.daemon.add_device(device_id, "Adder")
        path = f"/devices/{quote(device_id, safe='')}"
        assert lab.http.get(path).json()["device_id"] == device_id
        reply = post(lab, f"{path}/call", {"method": "add", "args": [2, 2]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["result"] == 4
    assert_error(post(lab, "/devices/50A/call", {"method": "add", "args": [1, 1]}), 404)


def test_argument_check_agrees_with_signature_bind() -> None:
    # Plain positional methods are checked by counting; it must match bind() exactly.
    from labd.calls import CallSpec

    def plain(a: Any, b: Any = 1, c: Any = 2) -> None: ...
    def none() -> None: ...
    def star(a: Any, *rest: Any) -> None: ...
    def keyword_only(a: Any, *, flag: bool = False) -> None: ...
    def anything(*args: Any, **kwargs: Any) -> None: ...

    for func in (plain, none, star, keyword_only, anything, print, len):
        info = CallSpec("probe", func.__name__, func)
        for n in range(5):
            for kwargs in ({}, {"a": 1}, {"b": 2}, {"flag": True}, {"zzz": 0}):
                args = list(range(n))
                try:
                    inspect.signature(func).bind(*args, **kwargs)
                    expected = None
                except TypeError:
                    expected = TypeError
                except ValueError:
                    expected = None  # no signature: nothing to check
                try:
                    info.check(args, kwargs)
                    got = None
                except TypeError:
                    got = TypeError
                assert got is expected, (func, args, kwargs)


def test_device_error_records(lab: Served) -> None:
    assert_error(lab.http.get("/devices/adder/error"), 404)
    assert_error(lab.http.get("/devices/ghost/error"), 404)
    assert_error(lab.http.delete("/devices/ghost/error"), 404)
    post(lab, "/devices/adder/call", {"method": "fail"})
    got = lab.http.get("/devices/adder/error")
    assert got.status_code == 200
    error = got.json()["error"]
    assert error["type"] == "ValueError" and error["origin"] == "device"
    assert error["context"]["device_id"] == "adder"
    assert_utc(got.json())
    assert lab.http.get("/devices/adder").json()["last_error"] == error
    assert lab.http.delete("/devices/adder/error").status_code == 204
    assert_error(lab.http.get("/devices/adder/error"), 404)
    assert lab.http.get("/devices/adder").json()["last_error"] is None


def test_streaming_control_endpoints(lab: Served) -> None:
    started = post(lab, "/devices/pusher/streaming/start", {"kwargs": {}})
    assert started.status_code == 200 and started.json()["streaming"] is True
    pusher = lab.daemon.get_device("pusher")
    assert pusher.starts == 1
    again = post(lab, "/devices/pusher/streaming/start")
    assert again.status_code == 200 and pusher.starts == 1
    stopped = post(lab, "/devices/pusher/streaming/stop")
    assert stopped.status_code == 200 and stopped.json()["streaming"] is False
    assert pusher.stops == 1
    assert post(lab, "/devices/pusher/streaming/stop").status_code == 200
    assert_error(post(lab, "/devices/ghost/streaming/start"), 404)
    assert_error(post(lab, "/devices/ghost/streaming/stop"), 404)
    assert_error(post(lab, "/devices/adder/streaming/start"), 400)


# -- never stall -----------------------------------------------------------------------------


def test_hung_call_times_out_and_the_server_keeps_serving(
    serve: Callable[..., Served], allow_threads: Any
) -> None:
    lab = serve()
    hung = lab.daemon.add_device("hung", "Adder")
    lab.daemon.add_device("other", "Adder")
    try:
        started = time.monotonic()
        err = assert_error(
            post(lab, "/devices/hung/call", {"method": "hang", "timeout": 0.5}),
            504,
            "DeviceTimeoutError",
        )
        assert time.monotonic() - started < 5.0
        assert err["context"] == {"device_id": "hung", "method": "hang"}
        assert hung.entered.is_set() and not hung.release.is_set()

        # /health is served while the call still hangs (its latency is a benchmark's job).
        assert lab.http.get("/health").status_code == 200
        assert not hung.release.is_set()
        assert lab.http.get("/devices/hung").status_code == 200
        assert (
            post(lab, "/devices/other/call", {"method": "add", "args": [2]}).json()["result"] == 2
        )

        started = time.monotonic()
        assert_error(
            post(lab, "/devices/hung/call", {"method": "add", "args": [1]}), 409, "DeviceBusy"
        )
        assert_error(post(lab, "/devices/hung/call", {"method": "get_value"}), 409, "DeviceBusy")
        assert time.monotonic() - started < 2.0  # fast, not after a timeout
        assert lab.http.get("/devices/hung/error").json()["error"]["type"] == "DeviceTimeoutError"
    finally:
        hung.release.set()

    def works() -> bool:
        r = post(lab, "/devices/hung/call", {"method": "add", "args": [1]})
        return r.status_code == 200

    assert wait_until(works, TIMEOUT)


def test_call_within_timeout_waits_for_the_previous_one(lab: Served) -> None:
    device = lab.daemon.get_device("adder")
    results: dict[str, httpx.Response] = {}

    def call(name: str, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=lab.url, timeout=TIMEOUT) as client:
            results[name] = client.post("/devices/adder/call", json=body)

    first = threading.Thread(target=call, args=("first", {"method": "hang", "timeout": 15}))
    first.start()
    assert device.entered.wait(TIMEOUT)
    second = threading.Thread(target=call, args=("second", {"method": "add", "args": [7]}))
    second.start()
    second.join(0.3)
    assert "second" not in results  # queued behind the running call, not refused
    device.release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert results["first"].json()["result"] == "late"
    assert results["second"].json()["result"] == 7


def test_default_call_timeout_applies(serve: Callable[..., Served], allow_threads: Any) -> None:
    lab = serve(call_timeout=0.5)
    device = lab.daemon.add_device("hung", "Adder")
    try:
        assert_error(post(lab, "/devices/hung/call", {"method": "hang"}), 504)
    finally:
        device.release.set()


# -- request validation -------------------------------------------------------------------

_BAD_BODIES: list[bytes] = [b"{", b"not json", b"[]", b'"text"', b"42", b"null", b"[1, 2]"]

_POST_ENDPOINTS: dict[str, list[dict[str, Any]]] = {
    "/devices": [
        {},
        {"device_id": "x"},
        {"device_id": 1, "device_type": "Adder"},
        {"device_id": "x", "device_type": ["Adder"]},
        {"device_id": "x", "device_type": "Adder", "params": [1]},
        {"device_id": "", "device_type": "Adder"},
    ],
    "/devices/adder/call": [
        {},
        {"method": 5},
        {"method": "add", "args": {"a": 1}},
        {"method": "add", "args": 1},
        {"method": "add", "kwargs": [1]},
        {"method": "add", "args": [1], "timeout": "soon"},
        {"method": "add", "args": [1], "timeout": -1},
    ],
    "/devices/pusher/streaming/start": [{"kwargs": [1]}, {"kwargs": "fast"}],
    "/devices/pusher/streaming/stop": [],
    "/devices/adder/connect": [],
    "/devices/adder/disconnect": [],
    "/tasks": [
        {},
        {"task_id": "t"},
        {"task_id": 3, "task_type": "Steps"},
        {"task_id": "t", "task_type": "Steps", "params": "x"},
    ],
    "/tasks/running/parameters": [{}, {"value": 1}, {"key": 5, "value": 1}, {"key": "gain"}],
    "/tasks/running/cancel": [],
    "/tasks/running/pause": [],
    "/tasks/running/resume": [],
}


_CALL_BODIES = [
    b'{"method": "add", "args": [1]}',
    b'{"method": "add", "args": [1], "timeout": 2}',
    b'{"method": "add", "args": [1], "timeout": 2.5, "extra": "ignored"}',
    b'{"method": "add", "args": [1], "timeout": "1.5"}',
    b'{"method": "add", "args": [1], "timeout": true}',
    b'{"method": "add", "args": [1], "timeout": 0}',
    b'{"method": "add", "args": {"a": 1}}',
    b'{"method": "add", "kwargs": [1]}',
    b'{"method": 5}',
    b'{"method": ""}',
    b'{"args": [1]}',
    b"[1, 2]",
    b"not json",
]


def test_the_call_fast_path_and_the_documented_model_agree(lab: Served) -> None:
    from pydantic import ValidationError

    from labd.server.models import CallRequest

    for body in _CALL_BODIES:
        try:
            CallRequest.model_validate_json(body)
            documented = True
        except ValidationError:
            documented = False
        response = lab.http.post("/devices/adder/call", content=body)
        assert (response.status_code == 200) is documented, (body, response.text)
        if not documented:
            assert_error(response, 400, "ValidationError")
    schema = lab.http.get("/openapi.json").json()["components"]["schemas"]["CallRequest"]
    assert "string" not in str(schema["properties"]["timeout"])


def test_bad_bodies_are_400_on_every_post_endpoint(lab: Served) -> None:
    lab.daemon.execute_task("running", "Steps", gate="validation")
    GATES["validation"] = threading.Event()
    try:
        for path, bodies in _POST_ENDPOINTS.items():
            for raw in _BAD_BODIES:
                response = lab.http.post(
                    path, content=raw, headers={"content-type": "application/json"}
                )
                assert_error(response, 400, "ValidationError")
            for body in bodies:
                response = lab.http.post(path, json=body)
                err = assert_error(response, 400)
                assert err["message"], (path, body)
    finally:
        GATES["validation"].set()
    assert lab.daemon.list_devices() == ["adder", "pusher"]
    assert not lab.daemon.get_device("pusher").starts


def test_oversized_bodies_are_413(serve: Callable[..., Served]) -> None:
    lab = serve(max_body_bytes=1024)
    lab.daemon.add_device("adder", "Adder")
    big = {"method": "add", "args": [1, 2], "kwargs": {}, "pad": "x" * 2000}
    assert_error(lab.http.post("/devices/adder/call", json=big), 413)

    def chunks() -> Iterator[bytes]:  # no content-length: counted while read
        yield b'{"method": "add", "args": [1], "pad": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    assert_error(lab.http.post("/devices/adder/call", content=chunks()), 413)
    small = lab.http.post("/devices/adder/call", json={"method": "add", "args": [1, 2]})
    assert small.json()["result"] == 3


def test_a_body_in_several_messages_is_joined_and_counted_against_the_limit() -> None:
    # Straight through ASGI, so that the body surely arrives in pieces.
    lab = ld.LabDaemon()
    lab.add_device("adder", Adder)
    app = create_app(lab, max_body_bytes=64)

    def request(*pieces: bytes) -> tuple[int, bytes]:
        messages = [
            {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
            for i, p in enumerate(pieces)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/devices/adder/call",
            "headers": [(b"content-type", b"application/json")],
            "query_string": b"",
        }
        asyncio.run(app(scope, receive, send))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body

    try:
        status, body = request(b'{"method": "ad', b'd", "args": ', b"[2, 3]}")
        assert status == 200 and orjson.loads(body)["result"] == 5
        status, body = request(b'{"method": "add", "args": [', b"1" * 40, b"]}")
        assert status == 413 and orjson.loads(body)["error"]["type"] == "PayloadTooLarge"
        status, body = request(b'{"method": "add", "args": [' + b"1" * 60 + b"]}")
        assert status == 413 and orjson.loads(body)["error"]["type"] == "PayloadTooLarge"
    finally:
        lab.shutdown()


# -- tasks ---------------------------------------------------------------------------------


def test_task_types(lab: Served) -> None:
    body = lab.http.get("/task-types").json()
    assert set(body) == {"task_types"}
    types = {t["name"]: t for t in body["task_types"]}
    assert set(types) == {"Hold", "Steps", "Waiter"}
    steps = types["Steps"]
    assert set(steps) == {"name", "parameters", "doc"}
    assert [p["name"] for p in steps["parameters"]] == ["steps", "gate", "fail"]
    assert steps["parameters"][0]["default"] == 3
    assert steps["parameters"][0]["annotation"] == "int"
    assert steps["doc"].startswith("Reports progress")


def test_task_endpoints(lab: Served) -> None:
    GATES["tasks"] = gate = threading.Event()
    try:
        started = post(
            lab, "/tasks", {"task_id": "t1", "task_type": "Steps", "params": {"gate": "tasks"}}
        )
        assert started.status_code == 201
        assert started.json() == {"task_id": "t1", "device_ids": [], "status": "started"}
        assert_error(post(lab, "/tasks", {"task_id": "t1", "task_type": "Steps"}), 409)
        assert_error(post(lab, "/tasks", {"task_id": "t2", "task_type": "Nope"}), 404)
        assert_error(
            post(lab, "/tasks", {"task_id": "t2", "task_type": "Steps", "params": {"bogus": 1}}),
            400,
        )

        info = lab.http.get("/tasks/t1").json()
        assert set(info) == {
            "task_id",
            "task_type",
            "device_ids",
            "status",
            "running",
            "paused",
            "progress",
            "message",
            "result",
            "exception",
            "started_at",
            "finished_at",
        }
        assert info["status"] == "running" and info["running"] is True
        assert assert_utc(info) == 1  # started_at
        assert [t["task_id"] for t in lab.http.get("/tasks").json()["tasks"]] == ["t1"]
        assert_error(lab.http.get("/tasks/ghost"), 404)

        assert post(lab, "/tasks/t1/parameters", {"key": "gain", "value": 5}).json() == {
            "key": "gain",
            "value": 5,
        }
        assert lab.http.get("/tasks/t1/parameters/gain").json() == {"key": "gain", "value": 5}
        assert_error(lab.http.get("/tasks/t1/parameters/nope"), 404)
        assert_error(post(lab, "/tasks/t1/parameters", {"key": "gain", "value": "loud"}), 400)
        assert_error(post(lab, "/tasks/t1/parameters", {"key": "nope", "value": 1}), 400)
        missing = assert_error(post(lab, "/tasks/t1/parameters", {"key": "gain"}), 400)
        assert "value" in missing["message"]
        assert lab.http.get("/tasks/t1/parameters/gain").json()["value"] == 5  # unchanged
        assert_error(post(lab, "/tasks/ghost/parameters", {"key": "gain", "value": 1}), 404)
        assert_error(lab.http.get("/tasks/ghost/parameters/gain"), 404)
    finally:
        gate.set()
    assert lab.daemon.get_task("t1").wait(TIMEOUT) == {"steps": 3}
    done = lab.http.get("/tasks/t1").json()
    assert done["status"] == "completed" and done["result"] == {"steps": 3}
    assert done["progress"] == 1.0 and done["message"] == "step 3"
    assert assert_utc(done) == 2
    for action in ("cancel", "pause", "resume"):
        assert_error(post(lab, f"/tasks/t1/{action}"), 409)
        assert_error(post(lab, f"/tasks/ghost/{action}"), 404)
    # A finished task's id may be reused at once.
    assert post(lab, "/tasks", {"task_id": "t1", "task_type": "Steps"}).status_code == 201


class ClaimsByName:
    """A task that writes ``device_ids`` as a bare string, a common slip."""

    device_ids = "adder"

    def __init__(self, task_id: str) -> None:
        pass

    def run(self, context: Any) -> None:
        raise AssertionError("must not run")


def test_a_task_with_bad_device_ids_is_a_400_naming_it(lab: Served) -> None:
    lab.daemon.register_plugins(tasks={"ClaimsByName": ClaimsByName})
    response = post(lab, "/tasks", {"task_id": "slip", "task_type": "ClaimsByName"})
    err = assert_error(response, 400, "TaskError")
    assert "'slip'" in err["message"] and "device_ids" in err["message"]
    assert "'adder'" in err["message"]
    assert lab.http.get("/devices/adder").json()["owned_by"] is None


def test_task_control(lab: Served) -> None:
    assert post(lab, "/tasks", {"task_id": "w", "task_type": "Waiter"}).status_code == 201
    paused = post(lab, "/tasks/w/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    resumed = post(lab, "/tasks/w/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    # A task without live parameters.
    assert_error(post(lab, "/tasks/w/parameters", {"key": "gain", "value": 1}), 400)
    assert_error(lab.http.get("/tasks/w/parameters/gain"), 400)
    assert post(lab, "/tasks/w/cancel").status_code == 200
    with pytest.raises(Exception, match="cancelled"):
        lab.daemon.get_task("w").wait(TIMEOUT)
    assert lab.http.get("/tasks/w").json()["status"] == "cancelled"
    assert_error(post(lab, "/tasks/w/cancel"), 409)


def test_task_error_records(lab: Served) -> None:
    post(lab, "/tasks", {"task_id": "bad", "task_type": "Steps", "params": {"fail": True}})
    with pytest.raises(Exception, match="diverged"):
        lab.daemon.get_task("bad").wait(TIMEOUT)
    got = lab.http.get("/tasks/bad/error")
    assert got.status_code == 200
    error = got.json()["error"]
    assert error["type"] == "RuntimeError" and error["origin"] == "task"
    assert "diverged" in error["message"] and "RuntimeError" in error["traceback"]
    info = lab.http.get("/tasks/bad").json()
    assert info["status"] == "failed" and info["exception"]["type"] == "RuntimeError"
    # One error object, made when the task failed: every read sees the same one.
    assert info["exception"] == error
    assert lab.http.get("/tasks/bad").json()["exception"] == error
    assert lab.http.get("/tasks").json()["tasks"][0]["exception"] == error
    assert error["context"] == {"task_id": "bad", "task_type": "Steps"}
    assert lab.http.delete("/tasks/bad/error").status_code == 204
    assert_error(lab.http.get("/tasks/bad/error"), 404)
    assert_error(lab.http.get("/tasks/ghost/error"), 404)
    assert_error(lab.http.delete("/tasks/ghost/error"), 404)


# -- ownership -----------------------------------------------------------------------------


def test_owned_device_refuses_commands_but_serves_reads(lab: Served) -> None:
    owner = post(
        lab,
        "/tasks",
        {"task_id": "owner", "task_type": "Hold", "params": {"devices": ["adder", "pusher"]}},
    )
    assert owner.json()["device_ids"] == ["adder", "pusher"]
    refused = [
        post(lab, "/devices/adder/call", {"method": "add", "args": [1]}),
        post(lab, "/devices/adder/call", {"method": "set_value", "args": [1]}),
        post(lab, "/devices/adder/connect"),
        post(lab, "/devices/adder/disconnect"),
        post(lab, "/devices/pusher/streaming/start"),
        post(lab, "/devices/pusher/streaming/stop"),
        lab.http.delete("/devices/adder"),
    ]
    for response in refused:
        err = assert_error(response, 409)
        assert "owner" in err["message"], err
        assert err["context"]["owner"] == "owner"
    other = post(
        lab, "/tasks", {"task_id": "second", "task_type": "Hold", "params": {"devices": ["adder"]}}
    )
    assert "owner" in assert_error(other, 409)["message"]

    assert post(lab, "/devices/adder/call", {"method": "get_value"}).json()["result"] == 0.0
    assert post(lab, "/devices/adder/call", {"method": "peek"}).status_code == 200
    assert lab.http.get("/devices/adder").json()["owned_by"] == "owner"
    assert lab.http.get("/devices/adder/methods").status_code == 200
    assert lab.daemon.list_devices() == ["adder", "pusher"]
    assert lab.daemon.get_device("pusher").starts == 0

    assert post(lab, "/tasks/owner/cancel").status_code == 200
    lab.daemon.get_task("owner").join_thread(TIMEOUT)
    assert wait_until(lambda: lab.http.get("/devices/adder").json()["owned_by"] is None, TIMEOUT)
    assert post(lab, "/devices/adder/call", {"method": "add", "args": [1]}).status_code == 200
    assert lab.http.delete("/devices/adder").status_code == 204


# -- auth ----------------------------------------------------------------------------------

# (method, path, body, lowest role allowed)
_ROLE_MATRIX: list[tuple[str, str, Any, str]] = [
    ("GET", "/", None, "viewer"),
    ("GET", "/devices", None, "viewer"),
    ("GET", "/devices/adder", None, "viewer"),
    ("GET", "/devices/adder/methods", None, "viewer"),
    ("GET", "/devices/adder/error", None, "viewer"),
    ("GET", "/task-types", None, "viewer"),
    ("GET", "/tasks", None, "viewer"),
    ("GET", "/tasks/held", None, "viewer"),
    ("GET", "/tasks/held/error", None, "viewer"),
    ("GET", "/tasks/steps/parameters/gain", None, "viewer"),
    ("GET", "/metrics", None, "viewer"),
    ("POST", "/devices/adder/call", {"method": "get_value"}, "viewer"),
    ("POST", "/devices/adder/call", {"method": "peek"}, "viewer"),
    ("POST", "/devices/adder/call", {"method": "add", "args": [1]}, "operator"),
    ("POST", "/devices/pusher/streaming/start", {}, "operator"),
    ("POST", "/devices/pusher/streaming/stop", None, "operator"),
    ("DELETE", "/devices/adder/error", None, "operator"),
    ("POST", "/tasks", {"task_id": "new", "task_type": "Waiter"}, "operator"),
    ("POST", "/tasks/steps/parameters", {"key": "gain", "value": 2}, "operator"),
    ("POST", "/tasks/new/pause", None, "operator"),
    ("POST", "/tasks/new/resume", None, "operator"),
    ("POST", "/tasks/new/cancel", None, "operator"),
    ("DELETE", "/tasks/held/error", None, "operator"),
    ("POST", "/devices", {"device_id": "extra", "device_type": "Adder"}, "admin"),
    ("POST", "/devices/adder/connect", None, "admin"),
    ("POST", "/devices/adder/disconnect", None, "admin"),
    ("DELETE", "/devices/extra", None, "admin"),
]
_TOKEN_OF = {role: token for token, role in TOKENS.items()}
_LEVEL = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.fixture
def secured(serve: Callable[..., Served]) -> Iterator[Served]:
    lab = serve(tokens=TOKENS)
    lab.daemon.add_device("adder", "Adder")
    lab.daemon.add_device("pusher", "Pusher")
    lab.daemon.execute_task("held", "Hold")
    GATES["auth"] = threading.Event()
    lab.daemon.execute_task("steps", "Steps", gate="auth")
    yield lab
    GATES["auth"].set()


def test_every_role_is_allowed_and_refused_where_spec_says(secured: Served) -> None:
    client = secured.http
    wrong: list[str] = []
    for role in ("viewer", "operator", "admin"):  # ascending: refusals change nothing
        headers = {"Authorization": f"Bearer {_TOKEN_OF[role]}"}
        for method, path, body, needed in _ROLE_MATRIX:
            response = client.request(method, path, json=body, headers=headers)
            allowed = _LEVEL[role] >= _LEVEL[needed]
            if allowed and response.status_code in (401, 403):
                wrong.append(f"{role} {method} {path}: {response.status_code} {response.text}")
            if not allowed:
                if response.status_code != 403:
                    wrong.append(f"{role} {method} {path}: {response.status_code}, not 403")
                else:
                    err = assert_error(response, 403, "Forbidden")
                    assert err["context"] == {"required": needed, "role": role}
    assert not wrong, "\n".join(wrong)
    assert "extra" not in secured.daemon.list_devices()  # added then removed by admin


def test_missing_or_bad_tokens_are_401(secured: Served) -> None:
    with httpx.Client(base_url=secured.url, timeout=TIMEOUT) as anonymous:
        for method, path, body, _ in _ROLE_MATRIX:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                response = anonymous.request(method, path, json=body, headers=headers)
                assert_error(response, 401, "Unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
        assert_error(anonymous.get("/stream/events"), 401)
        assert_error(anonymous.get("/stream/devices/pusher?token=wrong"), 401)
        assert_error(anonymous.get("/stream/tasks/held"), 401)
        # ?token= works for any request, as browsers' EventSource needs.
        assert anonymous.get("/devices?token=view-secret").status_code == 200
        assert_error(
            anonymous.post(
                "/devices/adder/call?token=view-secret", json={"method": "add", "args": [1]}
            ),
            403,
        )
        # Open paths.
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200
        ui = anonymous.get("/ui/")
        assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
        assert anonymous.get("/ui", follow_redirects=True).status_code == 200
    metrics = secured.http.get("/metrics", headers={"Authorization": "Bearer view-secret"}).text
    failures = [
        line for line in metrics.splitlines() if line.startswith("labd_auth_failures_total")
    ]
    assert failures and float(failures[0].split()[-1]) >= 3 * len(_ROLE_MATRIX)


def test_every_route_has_a_role_in_the_table(secured: Served) -> None:
    from labd.server.auth import ROUTE_ROLES, is_open

    routes = secured.server.app.routes()
    assert routes, "no routes found"
    missing = [route for route in routes if route not in ROUTE_ROLES]
    stale = [route for route in ROUTE_ROLES if route not in routes]
    assert missing == [] and stale == []
    for (_, path), role in ROUTE_ROLES.items():  # open exactly where the paths are open
        assert (role is None) == is_open(path.replace("{path:path}", "index.html")), path


def test_the_call_route_is_mounted_ahead_of_the_framework(secured: Served) -> None:
    from labd.server.auth import ROUTE_ROLES
    from labd.server.calls import CallRoute

    (route,) = secured.server.app.ahead
    assert isinstance(route, CallRoute) and ("POST", route.path) in ROUTE_ROLES
    scope = {"method": "POST", "path": "/devices/stage x/call"}
    assert route.match(scope) == "stage x"
    for method, path in [
        ("GET", "/devices/a/call"),
        ("POST", "/devices/a/b/call"),
        ("POST", "/devices//call"),
        ("POST", "/devices/a/calls"),
        ("POST", "/tasks/a/call"),
    ]:
        assert route.match({"method": method, "path": path}) is None, (method, path)


def _concrete(path: str) -> str:
    """A route template with every parameter naming something that does not exist."""
    return path.replace("{device_id}", "nope").replace("{task_id}", "nope").replace("{key}", "nope")


def test_anonymous_requests_learn_nothing_about_devices_tasks_or_methods(
    secured: Served,
) -> None:
    from labd.server.auth import ROUTE_ROLES

    bodies: list[dict[str, Any] | None] = [
        None,
        {},
        {"method": "secret_probe"},
        {"method": "add", "args": [1]},
    ]
    seen = 0
    with httpx.Client(base_url=secured.url, timeout=TIMEOUT) as anonymous:
        for (method, template), role in ROUTE_ROLES.items():
            if role is None:
                continue
            for body in bodies if method != "GET" else [None]:
                for path in {_concrete(template), template.replace("{device_id}", "adder")}:
                    response = anonymous.request(method, path, json=body)
                    err = assert_error(response, 401, "Unauthorized")
                    assert "nope" not in err["message"] and "secret_probe" not in err["message"]
                    seen += 1
        assert_error(anonymous.get("/no/such/path"), 401)
        assert_error(anonymous.post("/devices/nope/call", content=b"not json"), 401)
    assert seen > len(ROUTE_ROLES)


def test_sse_accepts_token_in_query(secured: Served) -> None:
    reader = secured.sse("/stream/events?token=view-secret")
    secured.http.post(
        "/tasks",
        json={"task_id": "seen", "task_type": "Waiter"},
        headers={"Authorization": "Bearer op-secret"},
    )
    assert wait_until(lambda: reader.named("task_started"), TIMEOUT)
    device = secured.sse("/stream/devices/pusher?token=view-secret")
    assert device.stream.status == 200
    secured.daemon.get_task("seen").cancel()


def test_tokens_never_appear_in_logs(secured: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="labd")
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    with httpx.Client(base_url=secured.url, timeout=TIMEOUT) as client:
        assert client.get("/devices?token=view-secret&x=1").status_code == 200
        assert (
            client.get("/devices", headers={"Authorization": "Bearer op-secret"}).status_code == 200
        )
        assert client.get("/devices?token=admin-secret-but-wrong").status_code == 401
    access = [r.getMessage() for r in caplog.records if r.name == "labd.server.access"]
    assert any("/devices?token=***&x=1" in line for line in access), access
    server_side = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("labd", "uvicorn"))
    )
    for secret in (*TOKENS, "admin-secret-but-wrong"):
        assert secret not in server_side


# -- metrics and OpenAPI ----------------------------------------------------------------------


def test_metrics_name_every_series(lab: Served) -> None:
    post(lab, "/devices/adder/call", {"method": "add", "args": [1]})
    post(lab, "/devices/adder/call", {"method": "fail"})
    post(lab, "/devices/pusher/streaming/start")
    reader = lab.sse("/stream/devices/pusher")
    lab.daemon.get_device("pusher").push(1)
    assert wait_until(lambda: reader.data(), TIMEOUT)
    response = lab.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    call = "/devices/{device_id}/call"
    for needle in (
        f'labd_http_requests_total{{method="POST",route="{call}",status="200"}} 1.0',
        f'labd_http_requests_total{{method="POST",route="{call}",status="500"}} 1.0',
        'labd_device_calls_total{device_id="adder",outcome="ok"} 1.0',
        'labd_device_calls_total{device_id="adder",outcome="error"} 1.0',
        'labd_stream_events_delivered_total{device_id="pusher"}',
        'labd_stream_events_dropped_total{device_id="pusher"} 0.0',
        'labd_sse_clients{device_id="pusher"} 1.0',
        "labd_auth_failures_total 0.0",
    ):
        assert needle in text, needle
    assert wait_until(
        lambda: (
            'labd_stream_events_delivered_total{device_id="pusher"} 1.0'
            in lab.http.get("/metrics").text
        ),
        TIMEOUT,
    )


def test_openapi_documents_requests_and_responses(lab: Served) -> None:
    spec = lab.http.get("/openapi.json").json()
    paths = spec["paths"]

    def body_ref(path: str, method: str = "post") -> str:
        content = paths[path][method]["requestBody"]["content"]["application/json"]
        schema = content["schema"]
        return str(schema.get("$ref") or schema.get("anyOf", [{}])[0].get("$ref"))

    def response_ref(path: str, method: str, status: str) -> str:
        schema = paths[path][method]["responses"][status]["content"]["application/json"]["schema"]
        return str(schema.get("$ref"))

    assert body_ref("/devices").endswith("/AddDeviceRequest")
    assert body_ref("/devices/{device_id}/call").endswith("/CallRequest")
    assert body_ref("/devices/{device_id}/streaming/start").endswith("/StartStreamingRequest")
    assert body_ref("/tasks").endswith("/StartTaskRequest")
    assert body_ref("/tasks/{task_id}/parameters").endswith("/ParameterRequest")
    assert response_ref("/devices", "get", "200").endswith("/DeviceList")
    assert response_ref("/devices", "post", "201").endswith("/DeviceInfo")
    assert response_ref("/devices/{device_id}/call", "post", "200").endswith("/CallResult")
    assert response_ref("/devices/{device_id}/call", "post", "504").endswith("/ErrorBody")
    assert response_ref("/devices/{device_id}/methods", "get", "200").endswith("/MethodList")
    assert response_ref("/tasks", "post", "201").endswith("/StartedTask")
    assert response_ref("/tasks/{task_id}", "get", "200").endswith("/TaskInfo")
    assert response_ref("/task-types", "get", "200").endswith("/TaskTypeList")
    assert response_ref("/health", "get", "200").endswith("/Health")
    assert (
        "text/event-stream"
        in paths["/stream/devices/{device_id}"]["get"]["responses"]["200"]["content"]
    )
    # Invalid bodies are answered 400 with the error body; no 422 is promised.
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert response_ref("/devices/{device_id}/call", "post", "400").endswith("/ErrorBody")
    assert response_ref("/tasks/{task_id}/parameters", "post", "400").endswith("/ErrorBody")
    docs = lab.http.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_every_timestamp_has_a_utc_offset(lab: Served) -> None:
    post(lab, "/devices/adder/call", {"method": "fail"})
    post(lab, "/tasks", {"task_id": "bad", "task_type": "Steps", "params": {"fail": True}})
    with pytest.raises(Exception, match="diverged"):
        lab.daemon.get_task("bad").wait(TIMEOUT)
    counted = 0
    for path in (
        "/health",
        "/devices",
        "/devices/adder",
        "/devices/adder/error",
        "/tasks",
        "/tasks/bad",
        "/tasks/bad/error",
    ):
        counted += assert_utc(lab.http.get(path).json())
    counted += assert_utc(post(lab, "/devices/ghost/call", {"method": "x"}).json())
    assert counted >= 10


def test_a_port_in_use_is_a_clear_error() -> None:
    import socket

    from labd import LabDaemon

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    daemon = LabDaemon()
    try:
        server = LabDaemonServer(daemon, port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start()
        server.stop()
    finally:
        holder.close()
        daemon.shutdown()
