"""The ``labd`` command line against live servers on loopback (port 0).

Most commands run in-process through typer's CliRunner; the commands that serve a lab
(``demo``, ``serve``), signal handling and a few client verbs run through the real entry
point, ``python -m labd``, as subprocesses.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import labd
from helpers import wait_until
from labd import LabDaemon
from labd.cli import app
from labd.cli.stream import StreamStats, summarize
from labd.client import ServerAPI
from labd.server import LabDaemonServer
from labd.sim import setup_demo

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lab.toml"
TOKENS = {"view-secret": "viewer", "op-secret": "operator"}
URL_LINE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")


# ---- test instruments and tasks ----------------------------------------------------------


class Echo:
    """Returns what it was called with, to check argument parsing end to end."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id

    def echo(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    def fail(self) -> None:
        raise ValueError("sensor saturated")


class Burst:
    """Streams ``n`` dicts as soon as it is started, then ends its stream by itself."""

    def __init__(self, device_id: str, n: int = 3) -> None:
        self.device_id = device_id
        self.n = n
        self._streaming = False
        self._thread: threading.Thread | None = None

    def start_streaming(self, callback: Any) -> None:
        self._streaming = True

        def loop() -> None:
            for i in range(self.n):
                callback({"i": i, "values": [i, 2 * i]})
            self._streaming = False

        self._thread = threading.Thread(target=loop, name="labd-test-burst", daemon=True)
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._streaming = False
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else 5.0)

    def is_streaming(self) -> bool:
        return self._streaming


class Boom:
    """A task that fails."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def run(self, context: Any) -> None:
        context.report(progress=0.5, message="heating")
        raise RuntimeError("sample too hot")


class Slow:
    """Reports progress until cancelled; returns how far it got."""

    def __init__(self, task_id: str, steps: int = 100_000) -> None:
        self.task_id = task_id
        self.steps = steps

    def run(self, context: Any) -> dict[str, int]:
        for i in range(self.steps):
            if context.cancel_event.wait(0.02):
                return {"done": i}
            context.report(progress=i / self.steps, message=f"step {i}")
        return {"done": self.steps}


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABD_URL", "LABD_TOKEN", "LABD_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "160")  # wide tables: cells are not cut in assertions


def _lab(daemon: LabDaemon) -> None:
    setup_demo(daemon)
    daemon.register_plugins(
        devices={"Echo": Echo, "Burst": Burst}, tasks={"boom": Boom, "slow": Slow}
    )
    daemon.add_device("echo1", "Echo")
    daemon.add_device("burst1", "Burst")


@pytest.fixture
def lab() -> Iterator[tuple[LabDaemon, str]]:
    """A demo lab plus test devices and tasks, served on a free loopback port."""
    daemon = LabDaemon()
    _lab(daemon)
    server = LabDaemonServer(daemon, port=0, heartbeat_interval=0.5)
    server.start()
    try:
        yield daemon, server.url
    finally:
        server.stop()
        daemon.shutdown(timeout=10.0)


@pytest.fixture
def url(lab: tuple[LabDaemon, str]) -> str:
    return lab[1]


@pytest.fixture
def tokened_url() -> Iterator[str]:
    daemon = LabDaemon()
    _lab(daemon)
    server = LabDaemonServer(daemon, port=0, tokens=TOKENS, heartbeat_interval=0.5)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        daemon.shutdown(timeout=10.0)


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_error(result: Any, code: int, *parts: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


# ---- subprocesses ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABD_")}
    env["COLUMNS"] = "160"
    return env


class Proc:
    """A ``python -m labd`` subprocess whose output lines are collected as they come."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "labd", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), name=f"test-{name}")
            for name, pipe in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr))
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, name: str, pipe: Any) -> None:
        for line in pipe:
            self.lines[name].append(line.rstrip("\n"))
            self._queue.put((name, line))

    def wait_for(
        self, pattern: re.Pattern[str] | str, stream: str = "stdout", timeout: float = 60.0
    ) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern`` (fails on timeout or exit)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found.extend(m for line in self.lines[stream] if (m := regex.search(line)))
            return bool(found) or self.popen.poll() is not None

        wait_until(seen, timeout=timeout, interval=0.02)
        if not found:
            self.finish(timeout=10)
            pytest.fail(f"no line matching {regex.pattern!r}; output: {self.lines}")
        return found[0]

    def finish(self, sig: int | None = None, timeout: float = 30.0) -> int:
        if sig is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            raise
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def run_module(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labd", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- global options ----------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"labd {labd.__version__}"


def test_help_lists_every_command() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in (
        "demo",
        "serve",
        "health",
        "devices",
        "call",
        "stream",
        "tasks",
        "run-task",
        "task-types",
    ):
        assert command in result.stdout


def test_url_global_per_command_and_env(url: str, dead_url: str) -> None:
    assert cli("--url", url, "health").exit_code == 0
    assert cli("health", "--url", url).exit_code == 0
    assert cli("health", env={"LABD_URL": url}).exit_code == 0
    # The command's own --url wins over the global one and the environment.
    assert cli("--url", dead_url, "health", "--url", url).exit_code == 0
    assert cli("health", "--url", url, env={"LABD_URL": dead_url}).exit_code == 0
    assert cli("--url", dead_url, "health").exit_code == 1


# ---- health, devices, call ---------------------------------------------------------------


def test_health(url: str) -> None:
    result = cli("--url", url, "health")
    assert result.exit_code == 0
    assert result.stdout.startswith("healthy") and url in result.stdout
    body = json.loads(cli("--url", url, "health", "--json").stdout)
    assert body["status"] == "healthy"


def test_devices_table_and_json(lab: tuple[LabDaemon, str]) -> None:
    _daemon, url = lab
    cli("--url", url, "call", "echo1", "fail")  # leaves a last error on echo1
    result = cli("--url", url, "devices")
    assert result.exit_code == 0
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "│" in line}
    for device_id in ("daq1", "laser1", "meter1", "camera1", "echo1"):
        assert device_id in rows
    assert "TunableLaser" in rows["laser1"] and "yes" in rows["laser1"]
    assert "no" in rows["echo1"] and "ValueError: sensor saturated" in rows["echo1"]
    infos = {d["device_id"]: d for d in json.loads(cli("--url", url, "devices", "--json").stdout)}
    assert infos["laser1"]["connected"] is True
    assert infos["echo1"]["last_error"]["message"] == "sensor saturated"


def test_devices_shows_owner(lab: tuple[LabDaemon, str]) -> None:
    daemon, url = lab
    handle = daemon.execute_task("hold", "sweep", dwell_s=0.5)
    try:
        result = cli("--url", url, "devices")
        rows = {line.split()[1]: line for line in result.stdout.splitlines() if "│" in line}
        assert "hold" in rows["laser1"] and "hold" in rows["meter1"]
        assert "hold" not in rows["daq1"]
    finally:
        handle.cancel()
        with pytest.raises(labd.TaskCancelledError):
            handle.wait(timeout=30)


def test_call_arguments(url: str) -> None:
    result = cli(
        "--url",
        url,
        "call",
        "echo1",
        "echo",
        "1",
        "2.5",
        "true",
        "null",
        "[1, 2]",
        "hello",
        '"x=1"',
        "-3",
        '{"a": 1}',
        "flag=false",
        "name=abc",
        "items=[3,4]",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "args": [1, 2.5, True, None, [1, 2], "hello", "x=1", -3, {"a": 1}],
        "kwargs": {"flag": False, "name": "abc", "items": [3, 4]},
    }


def test_call_sets_and_reads_a_device(url: str) -> None:
    assert cli("--url", url, "call", "laser1", "set_wavelength", "1551.5").exit_code == 0
    assert json.loads(cli("--url", url, "call", "laser1", "get_wavelength").stdout) == 1551.5
    assert cli("call", "laser1", "set_wavelength", "nm=1552", "--url", url).exit_code == 0
    status = cli("--url", url, "call", "laser1", "get_status", "--indent", "2")
    assert json.loads(status.stdout)["wavelength_nm"] == 1552.0
    assert "\n  " in status.stdout  # indented


def test_call_unknown_device(url: str) -> None:
    assert_one_error(cli("--url", url, "call", "nope1", "read"), 1, "nope1")


def test_call_device_error(url: str) -> None:
    assert_one_error(
        cli("--url", url, "call", "echo1", "fail"), 1, "ValueError", "sensor saturated"
    )
    result = cli("--url", url, "call", "laser1", "set_wavelength", "9999")
    assert_one_error(result, 1, "9999")


def test_call_bad_arguments(url: str) -> None:
    assert_one_error(cli("--url", url, "call", "echo1", "echo", "a=1", "2"), 2, "positional")
    assert_one_error(cli("--url", url, "call", "echo1", "echo", "a=1", "a=2"), 2, "twice")
    assert_one_error(cli("--url", url, "call", "laser1", "_private"), 1, "_private")
    assert_one_error(cli("--url", url, "call", "laser1", "get_wavelength", "5"), 1)
    missing = cli("--url", url, "call", "laser1")
    assert missing.exit_code == 2 and "missing argument" in missing.stderr.lower()


def test_server_down(dead_url: str) -> None:
    for args in (
        ["devices"],
        ["health"],
        ["call", "laser1", "get_wavelength"],
        ["stream", "daq1"],
        ["tasks"],
        ["run-task", "sweep"],
    ):
        assert_one_error(cli("--url", dead_url, *args), 1, dead_url, "cannot reach")


def test_debug_shows_traceback(dead_url: str) -> None:
    result = cli("--debug", "--url", dead_url, "devices")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "error: " in result.stderr


# ---- auth --------------------------------------------------------------------------------


def test_missing_token(tokened_url: str) -> None:
    assert_one_error(cli("--url", tokened_url, "devices"), 1, "needs a token", "--token")


def test_invalid_token(tokened_url: str) -> None:
    result = cli("--url", tokened_url, "--token", "wrong", "devices")
    assert_one_error(result, 1, "rejected the token", "invalid")


def test_role_too_weak(tokened_url: str) -> None:
    assert cli("--url", tokened_url, "--token", "view-secret", "devices").exit_code == 0
    result = cli("--url", tokened_url, "--token", "view-secret", "call", "laser1", "set_power", "2")
    assert_one_error(result, 1, "too weak")
    result = cli("--url", tokened_url, "run-task", "sweep", "--token", "view-secret")
    assert_one_error(result, 1, "too weak")


def test_token_from_env_and_per_command(tokened_url: str) -> None:
    ok = cli(
        "--url", tokened_url, "call", "laser1", "set_power", "2", env={"LABD_TOKEN": "op-secret"}
    )
    assert ok.exit_code == 0, ok.stderr
    ok = cli("call", "laser1", "get_power", "--url", tokened_url, "--token", "op-secret")
    assert json.loads(ok.stdout) == 2.0
    stream = cli("--url", tokened_url, "--token", "wrong", "stream", "daq1", "--count", "1")
    assert_one_error(stream, 1, "rejected the token")


# ---- stream ------------------------------------------------------------------------------


def test_stream_json_lines(url: str) -> None:
    result = cli("--url", url, "stream", "daq1", "--count", "20", "--json")
    assert result.exit_code == 0, result.stderr
    envelopes = [json.loads(line) for line in result.stdout.splitlines()]
    data = [e for e in envelopes if e["event"] == "device_data"]
    assert len(data) == 20
    assert all(e["device_id"] == "daq1" and len(e["payload"]) == 4 for e in data)
    sequences = [e["sequence"] for e in data]
    assert sequences == list(range(sequences[0], sequences[0] + 20))


def test_stream_live_view(url: str) -> None:
    result = cli("--url", url, "stream", "camera1", "-n", "3")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert re.search(r"received\s+3\b", text)
    assert re.search(r"dropped\s+0\b", text)
    assert re.search(r"latest\s+array 48x64", text)
    assert re.search(r"rate\s+[\d.,]+ /s", text)


def test_stream_end_is_reported(lab: tuple[LabDaemon, str]) -> None:
    _daemon, url = lab
    result = cli("--url", url, "stream", "burst1", "--json")
    assert result.exit_code == 0, result.stderr
    envelopes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["payload"]["i"] for e in envelopes if e["event"] == "device_data"] == [0, 1, 2]
    assert envelopes[-1]["event"] == "stream_end"
    assert "ended" in result.stderr


def test_stream_errors(url: str) -> None:
    assert_one_error(cli("--url", url, "stream", "nope1"), 1, "nope1")
    assert_one_error(cli("--url", url, "stream", "echo1", "-n", "1"), 1, "cannot stream")
    result = cli("--url", url, "stream", "daq1", "--count", "0")
    assert result.exit_code == 2


def test_stream_ctrl_c_exits_cleanly(url: str, procs: list[Proc]) -> None:
    proc = Proc("--url", url, "stream", "daq1", "--json")
    procs.append(proc)
    proc.wait_for('"event": "device_data"')
    assert proc.finish(signal.SIGINT) == 0
    stderr = "\n".join(proc.lines["stderr"])
    assert "stopped watching daq1" in stderr and "Traceback" not in stderr
    last = json.loads(proc.lines["stdout"][-1])  # no half-written line
    assert last["device_id"] == "daq1"


def test_stream_stats_count_gaps_and_restarts() -> None:
    stats = StreamStats("d")
    for sequence in (0, 1, 4, 5, 9):
        stats.add({"event": "device_data", "sequence": sequence, "run": 1, "payload": 1.5})
    assert stats.received == 5 and stats.dropped == 2 + 3
    stats.add({"event": "device_data", "sequence": 0, "run": 2, "payload": 2.0})
    stats.add({"event": "device_data", "sequence": 2, "run": 2, "payload": 2.0})
    assert stats.dropped == 6 and stats.last_sequence == 2 and stats.latest == 2.0
    stats.update_rate(now=stats._window_start + 2.0)
    assert stats.rate_hz == pytest.approx(7 / 2.0)


def test_stream_view_shows_a_stream_that_went_quiet() -> None:
    stats = StreamStats("d")
    stats.add({"event": "device_data", "sequence": 0, "run": 1, "payload": 1.0})
    stats.rate_hz = 250.0
    last = stats._last_data_at
    assert last is not None

    def shown(now: float) -> str:
        view = Console(record=True, width=100)
        view.print(stats.render(now=now))
        return view.export_text()

    busy = shown(last + 0.2)
    assert re.search(r"rate\s+250\.0 /s", busy) and re.search(r"state\s+streaming\n", busy)
    quiet = shown(last + 5.0)
    assert re.search(r"rate\s+0\.0 /s", quiet)
    assert "streaming, no data for 5 s" in quiet
    stats.state = "ended"
    assert "no data" not in shown(last + 5.0)


def test_summarize() -> None:
    assert summarize(1.23456789) == "1.23457"
    assert summarize([1, 2, 3]) == "[1, 2, 3]  (3)"
    assert summarize(list(range(10))).endswith(", ...]  (10)")
    assert summarize([[1, 2], [3, 6]]) == "array 2x2  min 1  max 6  mean 3"
    assert summarize({"x": 1, "y": [0.5]}) == "{x: 1, y: [0.5]  (1)}"
    assert len(summarize("z" * 500)) == 120


# ---- tasks -------------------------------------------------------------------------------


def test_run_task_completed(lab: tuple[LabDaemon, str]) -> None:
    daemon, url = lab
    result = cli(
        "--url",
        url,
        "run-task",
        "sweep",
        "--id",
        "s1",
        "-p",
        "start_nm=1549",
        "--param",
        "stop_nm=1551",
        "-p",
        "step_nm=0.5",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["wavelength_nm"] == [1549.0, 1549.5, 1550.0, 1550.5, 1551.0]
    assert "started task s1" in result.stderr and "100%" in result.stderr
    assert "s1 (completed)" in result.stderr
    assert daemon.get_task("s1").status == "completed"


def test_run_task_failed(url: str) -> None:
    result = cli("--url", url, "run-task", "boom", "--id", "b1")
    assert_failed = [line for line in error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == 1
    assert assert_failed == ["error: task b1 failed: RuntimeError: sample too hot"]
    assert result.stdout == ""


def test_run_task_bad_input(url: str) -> None:
    assert_one_error(cli("--url", url, "run-task", "sweep", "-p", "start_nm"), 2, "key=value")
    assert_one_error(cli("--url", url, "run-task", "nosuch"), 1, "nosuch")
    assert_one_error(cli("--url", url, "run-task", "sweep", "-p", "colour=1"), 1, "colour")


def test_run_task_detach_and_tasks_table(lab: tuple[LabDaemon, str]) -> None:
    daemon, url = lab
    result = cli("--url", url, "run-task", "slow", "--id", "bg1", "--detach")
    assert result.exit_code == 0 and result.stdout.strip() == "bg1"
    assert wait_until(lambda: daemon.get_task("bg1").info()["progress"] is not None)
    table = cli("--url", url, "tasks")
    row = next(line for line in table.stdout.splitlines() if "bg1" in line)
    assert "slow" in row and "running" in row and "step" in row
    daemon.get_task("bg1").cancel()
    assert wait_until(lambda: daemon.get_task("bg1").status == "cancelled")
    infos = json.loads(cli("--url", url, "tasks", "--json").stdout)
    assert [(t["task_id"], t["status"]) for t in infos] == [("bg1", "cancelled")]


def test_task_types(url: str) -> None:
    result = cli("--url", url, "task-types")
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "sweep" in line)
    assert "start_nm=1545.0" in row
    names = {t["name"] for t in json.loads(cli("--url", url, "task-types", "--json").stdout)}
    assert names == {"sweep", "boom", "slow"}


def test_run_task_ctrl_c_cancels_on_server(lab: tuple[LabDaemon, str], procs: list[Proc]) -> None:
    daemon, url = lab
    proc = Proc("--url", url, "run-task", "slow", "--id", "cc1")
    procs.append(proc)
    proc.wait_for("started task cc1", stream="stderr")
    assert wait_until(lambda: daemon.get_task("cc1").info()["progress"] is not None)
    assert proc.finish(signal.SIGINT) == 130
    assert daemon.get_task("cc1").status == "cancelled"
    assert "Traceback" not in "\n".join(proc.lines["stderr"])


def test_run_task_cancelled_elsewhere(lab: tuple[LabDaemon, str], procs: list[Proc]) -> None:
    daemon, url = lab
    proc = Proc("--url", url, "run-task", "slow", "--id", "ce1")
    procs.append(proc)
    proc.wait_for("started task ce1", stream="stderr")
    assert wait_until(lambda: daemon.get_task("ce1").info()["progress"] is not None)
    daemon.get_task("ce1").cancel()
    assert proc.finish() == 3
    assert any("was cancelled" in line for line in proc.lines["stderr"])
    assert "done" in json.loads(proc.lines["stdout"][-1])  # the partial result


# ---- the real entry point ----------------------------------------------------------------


def test_entry_point_client_verbs(url: str) -> None:
    devices = run_module("--url", url, "devices", "--json")
    assert devices.returncode == 0, devices.stderr
    assert "laser1" in {d["device_id"] for d in json.loads(devices.stdout)}
    missing = run_module("--url", url, "call", "nope1", "read")
    assert missing.returncode == 1
    assert error_lines(missing.stderr) == [missing.stderr.strip()]
    assert missing.stderr.startswith("error: ") and "nope1" in missing.stderr


def test_serve_example_toml(procs: list[Proc]) -> None:
    proc = Proc(
        "serve",
        str(EXAMPLE),
        "--port",
        "0",
        "--token",
        "op:not-a-role",
        "--token",
        "operator:s3cret",
    )
    procs.append(proc)
    url = proc.wait_for(URL_LINE).group(1)
    proc.wait_for(re.escape(f"dashboard: {url}/ui/"))  # printed after the URL line
    with ServerAPI(url, token="s3cret") as api:
        assert api.health()["status"] == "healthy"
        assert api.call_device_method("laser1", "get_wavelength") == 1550.0
        assert {d["device_id"] for d in api.list_devices()} == {
            "laser1",
            "meter1",
            "daq1",
            "camera1",
        }
    # "op:not-a-role" is not ROLE:SECRET, so the whole string is an admin token.
    with ServerAPI(url, token="op:not-a-role") as api:
        api.add_device("laser2", "TunableLaser")
    assert httpx.get(f"{url}/devices", timeout=10).status_code == 401
    assert proc.finish(signal.SIGTERM) == 0
    assert any("stopped" in line for line in proc.lines["stderr"])


def test_serve_python_setup_file(tmp_path: Path, procs: list[Proc]) -> None:
    (tmp_path / "lab.py").write_text(
        textwrap.dedent(
            """
            class Thermometer:
                def __init__(self, device_id):
                    self.device_id = device_id

                def read_kelvin(self):
                    return 4.2


            def setup(daemon):
                daemon.add_device("thermo1", Thermometer)
                return {"port": 0, "call_timeout": 5}
            """
        )
    )
    proc = Proc("serve", "lab.py", cwd=tmp_path)
    procs.append(proc)
    url = proc.wait_for(URL_LINE).group(1)
    result = run_module("--url", url, "call", "thermo1", "read_kelvin")
    assert result.returncode == 0 and json.loads(result.stdout) == 4.2
    assert proc.finish(signal.SIGINT) == 0


def test_serve_config_error(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(
        '[[devices]]\nid = "daq1"\ntype = "labd.sim:StreamingDAQ"\n'
        '[[devices]]\nid = "laser1"\ntype = "labd.sim:TunableLaser"\n'
        "params = { colour = 'red' }\n"
    )
    result = cli("serve", str(path))
    assert_one_error(result, 2, str(path), "devices[1] (laser1)", "bad params", "colour")
    proc = run_module("serve", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        error_lines(proc.stderr) == [proc.stderr.strip()] and "devices[1] (laser1)" in proc.stderr
    )
    assert_one_error(cli("serve", str(tmp_path / "missing.toml")), 2, "no such file")


def test_serve_refuses_remote_without_tokens(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('[server]\nhost = "0.0.0.0"\nport = 0\n')
    assert_one_error(cli("serve", str(path)), 2, "tokens", "allow_remote_without_auth")


def test_demo_serves_ui_and_devices(procs: list[Proc]) -> None:
    proc = Proc("demo", "--port", "0")
    procs.append(proc)
    url = proc.wait_for(URL_LINE).group(1)
    ui = httpx.get(f"{url}/ui/", timeout=10)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    devices = run_module("--url", url, "devices")
    assert devices.returncode == 0
    for device_id in ("daq1", "laser1", "meter1", "camera1"):
        assert device_id in devices.stdout
    assert proc.finish(signal.SIGINT) == 0
    assert "Traceback" not in "\n".join(proc.lines["stderr"])


def test_demo_with_token(procs: list[Proc]) -> None:
    proc = Proc("demo", "--port", "0", "--token", "viewer:look")
    procs.append(proc)
    url = proc.wait_for(URL_LINE).group(1)
    proc.wait_for("token")  # the token hint may follow the URL line
    assert httpx.get(f"{url}/devices", timeout=10).status_code == 401
    result = run_module("--url", url, "--token", "look", "call", "laser1", "set_power", "1")
    assert result.returncode == 1 and "too weak" in result.stderr
    assert proc.finish(signal.SIGINT) == 0


def test_demo_cors_origin(procs: list[Proc]) -> None:
    proc = Proc("demo", "--port", "0", "--cors-origin", "https://lab.example.org")
    procs.append(proc)
    url = proc.wait_for(URL_LINE).group(1)
    allowed = httpx.get(f"{url}/devices", headers={"Origin": "https://lab.example.org"})
    assert allowed.headers["access-control-allow-origin"] == "https://lab.example.org"
    other = httpx.get(f"{url}/devices", headers={"Origin": "https://other.example.org"})
    assert other.status_code == 403
    assert proc.finish(signal.SIGINT) == 0


def test_demo_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("demo", "--port", str(port))
    assert_one_error(result, 1, f"127.0.0.1:{port}", "in use", "--port")
