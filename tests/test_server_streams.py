"""Server-sent events end to end: fan-out, slow clients, resume, heartbeats, lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from helpers import labd_threads, wait_until
from labd.wire import parse_timestamp
from server_support import (
    GATES,
    TIMEOUT,
    Served,
    SSEReader,
    SSEStream,
    assert_error,
    serve,
)

__all__ = ["serve"]  # re-exported fixture


def stream_of(lab: Served, device_id: str) -> Any:
    return lab.daemon.device_record(device_id).stream


def contiguous(sequences: list[int]) -> bool:
    return sequences == list(range(sequences[0], sequences[0] + len(sequences)))


def test_three_clients_share_one_device_stream(serve: Callable[..., Served]) -> None:
    lab = serve()
    ticker = lab.daemon.add_device("tick", "Ticker", rate_hz=200.0)
    readers = [lab.sse("/stream/devices/tick") for _ in range(3)]
    assert readers[0].stream.headers["content-type"].startswith("text/event-stream")
    assert readers[0].stream.headers["cache-control"] == "no-cache"
    assert wait_until(lambda: all(len(r.data()) >= 150 for r in readers), TIMEOUT)
    assert ticker.starts == 1
    assert lab.http.get("/devices/tick").json()["streaming"] is True

    by_seq = [{d["sequence"]: d for d in r.data()} for r in readers]
    common = set(by_seq[0]) & set(by_seq[1]) & set(by_seq[2])
    assert len(common) >= 100
    for seq in common:
        assert by_seq[0][seq] == by_seq[1][seq] == by_seq[2][seq]
    for reader in readers:
        assert contiguous(reader.sequences())
        event = reader.named("device_data")[0]
        assert event["id"] == str(event["data"]["sequence"])
    envelope = by_seq[0][min(common)]
    assert envelope["event"] == "device_data" and envelope["device_id"] == "tick"
    assert envelope["payload"] == {"n": envelope["sequence"]}
    assert envelope["timestamp"].endswith("Z") and "." in envelope["timestamp"]
    parse_timestamp(envelope["timestamp"])


def test_a_client_that_never_reads_does_not_slow_the_others(serve: Callable[..., Served]) -> None:
    # The ring gives healthy readers a second of slack (they share the GIL with the
    # server here). ~2 kB events for 5 s: the stalled client falls ~5,000 events behind,
    # of which the kernel's socket buffers hold at most ~2,100 (4 MiB send + a few kB
    # receive), so it still overruns the 1,024-event ring and must show a gap.
    lab = serve(daemon_kwargs={"stream_buffer_events": 1024})
    lab.daemon.add_device("fast", "Ticker", rate_hz=1000.0, size=2000)
    assert lab.http.post("/devices/fast/streaming/start").status_code == 200
    # Opened, response head read, body never read: its socket buffers fill up.
    stalled = SSEStream(lab.url, "/stream/devices/fast", rcvbuf=4096)
    try:
        assert stalled.status == 200
        readers = [lab.sse("/stream/devices/fast") for _ in range(2)]
        assert wait_until(lambda: all(len(r.data()) >= 5000 for r in readers), 30.0)
        for reader in readers:
            assert contiguous(reader.sequences())
        newest = max(readers[0].sequences())
        # The stalled client reads at last: it lost its own oldest events, shown by a gap.
        seen: list[int] = []
        for event in stalled.events():
            if event.get("event") == "device_data":
                seen.append(event["data"]["sequence"])
                if event["data"]["sequence"] >= newest:
                    break
        assert not contiguous(seen)
        assert seen[-1] >= newest
    finally:
        stalled.close()
    metrics = lab.http.get("/metrics").text
    dropped = [
        line
        for line in metrics.splitlines()
        if line.startswith("labd_stream_events_dropped_total{")
    ]
    assert float(dropped[0].split()[-1]) > 0


def test_last_event_id_resumes_without_duplicates(serve: Callable[..., Served]) -> None:
    lab = serve()
    pusher = lab.daemon.add_device("p", "Pusher")
    lab.http.post("/devices/p/streaming/start")
    first = lab.sse("/stream/devices/p")
    for value in range(10):
        pusher.push(value)
    assert wait_until(lambda: len(first.data()) == 10, TIMEOUT)
    assert first.sequences() == list(range(10))
    first.close()
    for value in range(10, 15):
        pusher.push(value)

    resumed = lab.sse("/stream/devices/p", headers={"Last-Event-ID": "9"})
    assert wait_until(lambda: len(resumed.data()) == 5, TIMEOUT)
    assert resumed.sequences() == [10, 11, 12, 13, 14]
    assert [d["payload"] for d in resumed.data()] == [10, 11, 12, 13, 14]
    by_query = lab.sse("/stream/devices/p?last_event_id=12")
    assert wait_until(lambda: len(by_query.data()) == 2, TIMEOUT)
    assert by_query.sequences() == [13, 14]
    # Without an id a client starts with what comes next.
    fresh = lab.sse("/stream/devices/p")
    pusher.push(15)
    assert wait_until(lambda: fresh.data(), TIMEOUT)
    assert fresh.sequences() == [15]


def test_last_event_id_not_reached_after_restart_resumes_at_oldest(
    serve: Callable[..., Served],
) -> None:
    lab = serve(daemon_kwargs={"stream_buffer_events": 8})
    pusher = lab.daemon.add_device("p", "Pusher")
    lab.http.post("/devices/p/streaming/start")
    for value in range(30):
        pusher.push(value)
    lab.http.post("/devices/p/streaming/stop")
    lab.http.post("/devices/p/streaming/start")
    for value in range(10):
        pusher.push(100 + value)  # run 2: sequences 0..9, of which 2..9 are held
    # The client last saw sequence 29 of the earlier run; this run has not reached it.
    reader = lab.sse("/stream/devices/p", headers={"Last-Event-ID": "29"})
    assert wait_until(lambda: len(reader.data()) == 8, TIMEOUT)
    assert reader.sequences() == list(range(2, 10))
    assert {d["run"] for d in reader.data()} == {2}


def test_idle_stream_gets_heartbeats(serve: Callable[..., Served]) -> None:
    lab = serve(heartbeat_interval=0.2)
    lab.daemon.add_device("p", "Pusher")
    lab.http.post("/devices/p/streaming/start")
    reader = lab.sse("/stream/devices/p")
    assert wait_until(lambda: len(reader.comments()) >= 3, TIMEOUT)
    assert set(reader.comments()) == {"ping"}
    assert not reader.data()
    events = lab.sse("/stream/events")
    assert wait_until(lambda: len(events.comments()) >= 2, TIMEOUT)


def test_stream_end_when_the_device_stream_stops(serve: Callable[..., Served]) -> None:
    lab = serve()
    pusher = lab.daemon.add_device("p", "Pusher")
    lab.http.post("/devices/p/streaming/start")
    reader = lab.sse("/stream/devices/p")
    pusher.push(1)
    assert wait_until(lambda: reader.data(), TIMEOUT)
    lab.http.post("/devices/p/streaming/stop")
    assert wait_until(lambda: reader.named("stream_end"), TIMEOUT)
    assert reader.named("stream_end")[0]["data"]["device_id"] == "p"
    assert "error" not in reader.named("stream_end")[0]["data"]

    # A stream that ends by itself (the device's loop stopped) ends for clients too.
    lab.http.post("/devices/p/streaming/start")
    pusher.push(2)
    assert wait_until(lambda: len(reader.data()) == 2, TIMEOUT)
    pusher.finish()
    assert wait_until(lambda: len(reader.named("stream_end")) == 2, TIMEOUT)


def test_stream_error_reported_by_the_device(serve: Callable[..., Served]) -> None:
    lab = serve()
    pusher = lab.daemon.add_device("p", "Pusher")
    lab.http.post("/devices/p/streaming/start")
    reader = lab.sse("/stream/devices/p")
    pusher._callback.error(OSError("overrange"))
    assert wait_until(lambda: reader.named("stream_error"), TIMEOUT)
    data = reader.named("stream_error")[0]["data"]
    assert data["device_id"] == "p"
    assert data["error"]["type"] == "OSError" and data["error"]["origin"] == "device"


def test_sse_started_stream_stops_when_its_last_client_leaves(serve: Callable[..., Served]) -> None:
    lab = serve()
    ticker = lab.daemon.add_device("tick", "Ticker")
    one = lab.sse("/stream/devices/tick")
    assert wait_until(lambda: one.data(), TIMEOUT)
    two = lab.sse("/stream/devices/tick")
    assert wait_until(lambda: two.data(), TIMEOUT)
    assert ticker.starts == 1
    one.close()
    assert wait_until(lambda: stream_of(lab, "tick").remote_readers == 1, TIMEOUT)
    assert ticker.stops == 0 and lab.http.get("/devices/tick").json()["streaming"]
    two.close()
    assert wait_until(lambda: ticker.stops == 1, TIMEOUT)
    assert lab.http.get("/devices/tick").json()["streaming"] is False


def test_explicitly_started_stream_keeps_running(serve: Callable[..., Served]) -> None:
    lab = serve()
    ticker = lab.daemon.add_device("tick", "Ticker")
    lab.http.post("/devices/tick/streaming/start")
    reader = lab.sse("/stream/devices/tick")
    assert wait_until(lambda: reader.data(), TIMEOUT)
    reader.close()
    assert wait_until(lambda: stream_of(lab, "tick").remote_readers == 0, TIMEOUT)
    assert ticker.stops == 0 and lab.http.get("/devices/tick").json()["streaming"]

    # Started locally: the same.
    lab.http.post("/devices/tick/streaming/stop")
    received: list[Any] = []
    sub = lab.daemon.start_streaming("tick", received.append)
    again = lab.sse("/stream/devices/tick")
    assert wait_until(lambda: again.data(), TIMEOUT)
    again.close()
    assert wait_until(lambda: stream_of(lab, "tick").remote_readers == 0, TIMEOUT)
    assert ticker.stops == 1 and stream_of(lab, "tick").running
    sub.close()


def test_subscription_does_not_start_an_owned_device(serve: Callable[..., Served]) -> None:
    lab = serve(heartbeat_interval=0.2)
    pusher = lab.daemon.add_device("p", "Pusher")
    lab.daemon.execute_task("owner", "Hold", devices=["p"])
    reader = lab.sse("/stream/devices/p")
    assert wait_until(lambda: len(reader.comments()) >= 2, TIMEOUT)
    assert pusher.starts == 0 and not reader.data()
    # The owner starts it (local calls are not checked): the waiting client gets data.
    sub = lab.daemon.start_streaming("p", lambda datum: None)
    pusher.push("hello")
    assert wait_until(lambda: reader.data(), TIMEOUT)
    assert reader.data()[0]["payload"] == "hello"
    sub.close()
    lab.daemon.get_task("owner").cancel()


def test_streams_that_cannot_start_fail_at_once(serve: Callable[..., Served]) -> None:
    lab = serve()
    lab.daemon.add_device("plain", "Adder")
    lab.daemon.add_device("broken", "Broken")
    with httpx.Client(base_url=lab.url, timeout=TIMEOUT) as client:
        started = time.monotonic()
        assert_error(client.get("/stream/devices/plain"), 400, "DeviceError")
        assert_error(client.get("/stream/devices/ghost"), 404)
        err = assert_error(client.get("/stream/devices/broken"), 409, "RuntimeError")
        assert "sensor head missing" in err["message"]
        assert err["origin"] == "device"
        assert_error(client.get("/stream/tasks/ghost"), 404)
        assert time.monotonic() - started < 5.0
    assert stream_of(lab, "broken").remote_readers == 0
    assert lab.http.get("/metrics").status_code == 200


def test_task_stream(serve: Callable[..., Served]) -> None:
    lab = serve()
    GATES["task-stream"] = gate = threading.Event()
    try:
        lab.http.post(
            "/tasks", json={"task_id": "s", "task_type": "Steps", "params": {"gate": "task-stream"}}
        )
        reader = lab.sse("/stream/tasks/s")
        assert wait_until(lambda: reader.named("task_progress"), TIMEOUT)
        assert not reader.ended.is_set()
    finally:
        gate.set()
    assert reader.ended.wait(TIMEOUT)  # the stream ends with the task
    progress = [e["data"] for e in reader.named("task_progress")]
    assert progress == [
        {
            "event": "task_progress",
            "task_id": "s",
            "progress": (i + 1) / 3,
            "message": f"step {i + 1}",
            "data": {"index": i},
        }
        for i in range(3)
    ]
    statuses = [e["data"] for e in reader.named("task_status")]
    assert statuses == [
        {"event": "task_status", "task_id": "s", "status": "running"},
        {"event": "task_status", "task_id": "s", "status": "completed"},
    ]
    names = [e["event"] for e in reader.events if "event" in e]
    assert names[-1] == "task_status"
    # A finished task's stream replays what it holds, then ends.
    late = lab.sse("/stream/tasks/s")
    assert late.ended.wait(TIMEOUT)
    assert len(late.named("task_progress")) == 3


def test_event_stream_names_and_fields(serve: Callable[..., Served]) -> None:
    lab = serve()
    events = lab.sse("/stream/events")
    http = lab.http
    assert http.post("/devices", json={"device_id": "a", "device_type": "Adder"}).status_code == 201
    http.post("/devices", json={"device_id": "p", "device_type": "Pusher"})
    http.post("/devices/a/connect")
    http.post("/devices/p/streaming/start")
    http.post("/devices/p/streaming/stop")
    http.post("/devices/a/call", json={"method": "fail"})
    http.delete("/devices/a/error")
    http.post("/devices/a/disconnect")
    http.delete("/devices/a")
    http.post("/tasks", json={"task_id": "t", "task_type": "Steps", "params": {"steps": 1}})
    lab.daemon.get_task("t").wait(TIMEOUT)
    http.post("/tasks", json={"task_id": "f", "task_type": "Steps", "params": {"fail": True}})
    assert wait_until(lambda: len(events.named("task_finished")) == 2, TIMEOUT)

    names = {e["event"] for e in events.events if "event" in e}
    assert names == {
        "device_added",
        "device_removed",
        "device_connected",
        "device_disconnected",
        "streaming_started",
        "streaming_stopped",
        "task_started",
        "task_progress",
        "task_status",
        "task_finished",
        "error_recorded",
        "error_cleared",
    }
    for event in events.events:
        if "event" not in event:
            continue
        data = event["data"]
        assert data["event"] == event["event"]
        parse_timestamp(data["timestamp"])
        assert data["timestamp"].endswith("Z")
        assert "device_id" in data or "task_id" in data, data
    added = events.named("device_added")[0]["data"]
    assert added["device_id"] == "a" and added["device_type"] == "Adder"
    done, failed = (e["data"] for e in events.named("task_finished"))
    assert done["task_id"] == "t" and done["status"] == "completed"
    assert done["result"] == {"steps": 1} and done["error"] is None
    assert failed["status"] == "failed" and failed["error"]["type"] == "RuntimeError"
    recorded = [e["data"] for e in events.named("error_recorded")]
    assert recorded[0]["device_id"] == "a" and recorded[0]["error"]["type"] == "ValueError"


def test_stop_closes_open_streams_and_leaves_no_threads(serve: Callable[..., Served]) -> None:
    lab = serve()
    lab.daemon.add_device("tick", "Ticker")
    GATES["stop"] = gate = threading.Event()
    lab.daemon.execute_task("s", "Steps", gate="stop")
    readers = [
        lab.sse("/stream/devices/tick"),
        lab.sse("/stream/events"),
        lab.sse("/stream/tasks/s"),
    ]
    try:
        assert wait_until(lambda: readers[0].data(), TIMEOUT)
        started = time.monotonic()
        lab.server.stop()
        for reader in readers:
            assert reader.ended.wait(5.0)
        assert time.monotonic() - started < 5.0
        assert not [t.name for t in labd_threads() if t.name.startswith("labd-server")]
        with httpx.Client(timeout=2.0) as client:
            try:
                client.get(lab.url + "/health")
            except httpx.TransportError:
                pass
            else:
                raise AssertionError("server still answering after stop()")
        lab.server.stop()  # idempotent
    finally:
        gate.set()


def test_many_sse_connections_leave_no_readers_behind(serve: Callable[..., Served]) -> None:
    lab = serve()
    pusher = lab.daemon.add_device("p", "Pusher")
    for _ in range(20):
        reader = SSEReader.open(lab.url, "/stream/devices/p")
        reader.close()
    assert wait_until(lambda: stream_of(lab, "p").remote_readers == 0, TIMEOUT)
    # A client may join before the previous one's leave is processed: fewer starts.
    assert wait_until(lambda: not stream_of(lab, "p").running, TIMEOUT), (
        pusher.starts,
        pusher.stops,
    )
    assert pusher.starts == pusher.stops >= 1
    assert wait_until(
        lambda: 'labd_sse_clients{device_id="p"} 0.0' in lab.http.get("/metrics").text
    )
