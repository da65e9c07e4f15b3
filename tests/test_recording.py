"""Recording device streams to HDF5: lossless capture, layouts, metadata, lifecycle, losses."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import wait_until
from labd import DeviceError, LabDaemon
from labd.recording import Recording, load_recording

pytest.importorskip("h5py")


class FeedSource:
    """Streams whatever the test feeds it, on the feeding thread (the test's)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._callback: Callable[[Any], Any] | None = None
        self._running = False

    def start_streaming(self, callback: Callable[[Any], Any]) -> None:
        self._callback = callback
        self._running = True

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._running = False

    def is_streaming(self) -> bool:
        return self._running

    def _feed(self, *data: Any) -> None:
        assert self._callback is not None
        for datum in data:
            self._callback(datum)

    def _run_out(self) -> None:
        """The acquisition ends on its own (the hub notices through is_streaming)."""
        self._running = False


class PacedSource:
    """Emits ``[n, n / 2]`` arrays from its own thread at ``rate_hz``, in bursts every ms."""

    def __init__(self, device_id: str, rate_hz: float = 10_000.0) -> None:
        self.device_id = device_id
        self.rate_hz = rate_hz
        self.emitted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_streaming(self, callback: Callable[[Any], Any]) -> None:
        self._stop.clear()
        self.emitted = 0
        self._thread = threading.Thread(
            target=self._run, args=(callback,), name="labd-test-paced", daemon=True
        )
        self._thread.start()

    def stop_streaming(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else 10.0)

    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _halt(self) -> None:
        """The acquisition stops on its own; every datum counted went to the stream."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self, callback: Callable[[Any], Any]) -> None:
        start = time.monotonic()
        while not self._stop.wait(0.001):
            due = int((time.monotonic() - start) * self.rate_hz)
            burst = min(due - self.emitted, 1000)  # catch up after a late wake-up, boundedly
            for _ in range(burst):
                n = self.emitted
                callback(np.array([n, n / 2.0]))
                self.emitted = n + 1


@pytest.fixture
def feed(daemon: LabDaemon) -> FeedSource:
    source: FeedSource = daemon.add_device("feed", FeedSource)
    return source


def record(daemon: LabDaemon, path: Path, **options: Any) -> Recording:
    rec = daemon.record("feed", path, **options)
    assert isinstance(rec, Recording)
    return rec


# ------------------------------------------------------------------ the 10 kHz case


def test_records_a_10khz_stream_for_5_s_without_loss(daemon: LabDaemon, tmp_path: Path) -> None:
    dev: PacedSource = daemon.add_device("fast", PacedSource)
    path = tmp_path / "fast.h5"
    rec = daemon.record("fast", path)  # starts the stream
    seen = {"inline": 0, "queued": 0}

    def inline(_: Any) -> None:
        seen["inline"] += 1

    def queued(_: Any) -> None:
        seen["queued"] += 1

    live_a = daemon.start_streaming("fast", inline)
    live_b = daemon.start_streaming("fast", queued, queue_size=100_000)
    assert any(t.name == "labd-record-fast" and t.daemon for t in threading.enumerate())

    # 50,000 data at 10 kHz: five seconds of stream.
    assert wait_until(lambda: dev.emitted >= 50_000, timeout=60.0)
    dev._halt()
    assert rec.wait(30.0), "the recording did not finish after its stream ended"

    emitted = dev.emitted
    stream = daemon.device_record("fast").stream
    assert stream is not None and stream.emitted == emitted
    assert rec.lost == 0
    assert rec.recorded == emitted
    loaded = load_recording(path)
    sequence = loaded["sequence"]
    assert len(sequence) == emitted
    assert sequence[0] == 0
    assert np.all(np.diff(sequence) == 1)
    data = loaded["data"]
    assert data.shape == (emitted, 2)
    assert np.array_equal(data[:, 0], sequence)  # each row is the datum of its sequence
    assert loaded["metadata"]["recorded"] == emitted
    assert loaded["metadata"]["lost"] == 0
    assert loaded["metadata"]["ended_by"] == "stream_end"
    stamps = loaded["timestamp"]
    assert stamps.dtype == np.float64
    assert rec.started_at - 1.0 <= stamps[0] <= stamps[-1] <= (rec.stopped_at or 0) + 1.0
    assert seen["inline"] > 0 and live_a.delivered == seen["inline"]
    assert wait_until(lambda: seen["queued"] == live_b.delivered and seen["queued"] > 0)


# ------------------------------------------------------------------ layouts


def test_python_floats_round_trip(daemon: LabDaemon, feed: FeedSource, tmp_path: Path) -> None:
    path = tmp_path / "floats.h5"
    with record(daemon, path) as rec:
        feed._feed(*[i * 0.25 for i in range(3000)])
        assert wait_until(lambda: rec.recorded == 3000)
    loaded = load_recording(path)
    assert loaded["data"].dtype == np.float64
    assert np.array_equal(loaded["data"], np.arange(3000) * 0.25)
    assert np.array_equal(loaded["sequence"], np.arange(3000))


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([1, 2, 3, -(2**40)], np.int64),
        ([np.float32(0.5), np.float32(1.5)], np.float32),
        ([np.uint16(7), np.uint16(65535)], np.uint16),
        ([True, False, True], np.bool_),
        ([1 + 2j, 3.0 - 1j], np.complex128),
    ],
)
def test_scalars_keep_their_dtype(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, values: list[Any], dtype: Any
) -> None:
    path = tmp_path / "scalars.h5"
    with record(daemon, path):
        feed._feed(*values)
    loaded = load_recording(path)
    assert loaded["data"].dtype == dtype
    assert loaded["data"].tolist() == [np.asarray(v).item() for v in values]


def test_fixed_shape_arrays_round_trip(daemon: LabDaemon, feed: FeedSource, tmp_path: Path) -> None:
    frames = [np.arange(6, dtype=np.int16).reshape(3, 2) + i for i in range(50)]
    path = tmp_path / "frames.h5"
    with record(daemon, path, chunk_rows=8):
        feed._feed(*frames)
    loaded = load_recording(path)
    assert loaded["data"].shape == (50, 3, 2)
    assert loaded["data"].dtype == np.int16
    assert np.array_equal(loaded["data"], np.stack(frames))


def test_dicts_become_a_group_of_datasets(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    rows = [{"power": 0.1 * i, "count": i, "trace": np.full(4, i, np.float32)} for i in range(20)]
    path = tmp_path / "dicts.h5"
    with record(daemon, path):
        feed._feed(*rows)
    data = load_recording(path)["data"]
    assert list(data) == ["power", "count", "trace"]
    assert np.allclose(data["power"], 0.1 * np.arange(20))
    assert data["count"].dtype == np.int64 and data["count"].tolist() == list(range(20))
    assert data["trace"].shape == (20, 4) and data["trace"].dtype == np.float32
    assert np.array_equal(data["trace"][:, 0], np.arange(20))


def test_other_data_are_stored_as_json(daemon: LabDaemon, feed: FeedSource, tmp_path: Path) -> None:
    values = ["idle", [1, 2, 3], {"state": "ok", "ch": [0.5, 1.5]}, None]
    path = tmp_path / "json.h5"
    with record(daemon, path) as rec:
        feed._feed(*values)
    assert rec.recorded == 4
    loaded = load_recording(path)
    assert loaded["data"] == values
    assert loaded["sequence"].tolist() == [0, 1, 2, 3]


def test_a_datum_that_does_not_fit_the_layout_is_kept_as_json(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "misfit.h5"
    caplog.set_level(logging.WARNING, logger="labd.recording")
    with record(daemon, path) as rec:
        feed._feed(np.zeros(3), np.ones(3), np.ones(5), np.full(3, 2.0), "text", np.ones(3) * 3)
    assert (rec.recorded, rec.lost) == (6, 0)
    loaded = load_recording(path)
    assert loaded["sequence"].tolist() == [0, 1, 2, 3, 4, 5]
    data = loaded["data"]
    assert isinstance(data, list)
    assert [np.asarray(d).tolist() for d in data] == [
        [0.0] * 3,
        [1.0] * 3,
        [1.0] * 5,
        [2.0] * 3,
        "text",
        [3.0] * 3,
    ]
    misfit_warnings = [r for r in caplog.records if "does not fit the layout" in r.getMessage()]
    assert len(misfit_warnings) == 1
    assert "#2" in misfit_warnings[0].getMessage()


def test_a_datum_json_cannot_encode_is_counted_lost(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "object.h5"
    with record(daemon, path) as rec:
        feed._feed("a", object(), "c")
    assert (rec.recorded, rec.lost) == (2, 1)
    loaded = load_recording(path)
    assert loaded["sequence"].tolist() == [0, 2]  # the gap shows the loss
    assert loaded["data"] == ["a", "c"]
    assert loaded["metadata"]["lost"] == 1
    assert any("could not be encoded" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ sequence and metadata


def test_sequence_numbers_are_the_streams(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    daemon.start_streaming("feed", lambda _: None)
    feed._feed(*range(5))  # sequence 0..4, before the recording
    path = tmp_path / "late.h5"
    with record(daemon, path):
        feed._feed(*range(100, 103))
    loaded = load_recording(path)
    assert loaded["sequence"].tolist() == [5, 6, 7]
    assert loaded["data"].tolist() == [100, 101, 102]


def test_metadata_holds_device_caller_and_capture_info(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    path = tmp_path / "meta.h5"
    caller = {"sample": "quartz", "temperature_K": 4.2, "settings": {"gain": [1, 2]}}
    with record(daemon, path, metadata=caller):
        feed._feed(1.0, 2.0)
    meta = load_recording(path)["metadata"]
    assert meta["device_id"] == "feed"
    assert meta["device_type"] == "FeedSource"
    assert meta["sample"] == "quartz"
    assert meta["temperature_K"] == 4.2
    assert meta["settings"] == {"gain": [1, 2]}
    for key in ("timestamp", "hostname", "user", "python_version", "labd_version"):
        assert key in meta
    assert meta["started_at"] <= meta["stopped_at"]
    assert (meta["recorded"], meta["lost"], meta["ended_by"]) == (2, 0, "stop")


def test_metadata_keys_labd_writes_are_refused(daemon: LabDaemon, tmp_path: Path) -> None:
    daemon.add_device("feed", FeedSource)
    path = tmp_path / "clash.h5"
    with pytest.raises(ValueError, match="recorded"):
        record(daemon, path, metadata={"recorded": 3})
    assert not path.exists()


# ------------------------------------------------------------------ lifecycle


def test_an_existing_file_is_not_overwritten(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    path = tmp_path / "precious.h5"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"precious\.h5"):
        record(daemon, path)
    assert path.read_bytes() == b"keep me"
    assert not feed.is_streaming()  # refused before subscribing
    with record(daemon, path, overwrite=True):
        feed._feed(1.5)
    assert load_recording(path)["data"].tolist() == [1.5]


def test_context_manager_stops_and_closes(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    path = tmp_path / "ctx.h5"
    with record(daemon, path) as rec:
        assert rec.is_recording()
        assert feed.is_streaming()  # recording started the stream
        feed._feed(1, 2, 3)
    assert not rec.is_recording()
    assert rec.recorded == 3
    assert rec.path == path
    assert not any(t.name == "labd-record-feed" for t in threading.enumerate())
    feed._feed(4)  # the stream keeps running for others; the closed file is not touched
    assert load_recording(path)["data"].tolist() == [1, 2, 3]
    rec.stop()  # idempotent
    assert rec.recorded == 3


def test_a_stream_that_ends_by_itself_finishes_the_recording(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path
) -> None:
    path = tmp_path / "ends.h5"
    rec = record(daemon, path)
    feed._feed(*range(10))
    feed._run_out()
    assert rec.wait(10.0), "the recording did not notice the end of its stream"
    assert not rec.is_recording()
    loaded = load_recording(path)
    assert loaded["data"].tolist() == list(range(10))
    assert loaded["metadata"]["ended_by"] == "stream_end"
    rec.stop()


def test_an_empty_recording_loads(daemon: LabDaemon, feed: FeedSource, tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    record(daemon, path).stop()
    loaded = load_recording(path)
    assert loaded["sequence"].shape == (0,) and loaded["sequence"].dtype == np.int64
    assert loaded["timestamp"].shape == (0,)
    assert loaded["data"] == []
    assert loaded["metadata"]["recorded"] == 0


def test_a_device_that_cannot_stream_is_refused(daemon: LabDaemon, tmp_path: Path) -> None:
    class Meter:
        def read(self) -> float:
            return 1.0

    daemon.add_device("meter", Meter)
    path = tmp_path / "meter.h5"
    with pytest.raises(DeviceError, match="meter"):
        daemon.record("meter", path)
    assert not path.exists()


def test_a_device_whose_start_fails_leaves_no_file(daemon: LabDaemon, tmp_path: Path) -> None:
    class Broken:
        def start_streaming(self, callback: Callable[[Any], Any]) -> None:
            raise RuntimeError("no trigger")

        def stop_streaming(self) -> None:
            pass

    daemon.add_device("broken", Broken)
    path = tmp_path / "broken.h5"
    with pytest.raises(RuntimeError, match="no trigger"):
        daemon.record("broken", path)
    assert not path.exists()


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    from labd import save_hdf5

    path = save_hdf5({"x": np.arange(3)}, tmp_path / "plain.h5")
    with pytest.raises(ValueError, match="not a labd recording"):
        load_recording(path)


def test_missing_h5py_names_the_extra(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"labd\[hdf5\]"):
        record(daemon, tmp_path / "none.h5")
    assert not feed.is_streaming()


# ------------------------------------------------------------------ losses and failures


def test_a_writer_that_falls_behind_drops_and_counts_exactly(
    daemon: LabDaemon,
    feed: FeedSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered = threading.Event()
    release = threading.Event()
    write_batch = Recording._write_batch

    released: list[bool] = []  # checked below: the writer thread would swallow an assert

    def slow_write(self: Recording, batch: list[Any]) -> None:
        entered.set()
        released.append(release.wait(30.0))
        write_batch(self, batch)

    monkeypatch.setattr(Recording, "_write_batch", slow_write)
    caplog.set_level(logging.WARNING, logger="labd.recording")
    path = tmp_path / "slow.h5"
    rec = record(daemon, path, max_pending=10, chunk_rows=1)
    feed._feed(0)
    assert entered.wait(10.0)  # the writer holds datum 0 and is stuck on the disk
    feed._feed(*range(1, 101))  # never blocks: 10 wait in the buffer, 90 are dropped
    assert rec.lost == 90
    assert rec.pending == 10
    release.set()
    rec.stop(timeout=30.0)
    assert released and all(released)

    assert (rec.recorded, rec.lost) == (11, 90)
    assert rec.recorded + rec.lost == 101
    loaded = load_recording(path)
    assert loaded["sequence"].tolist() == list(range(11))
    assert loaded["metadata"]["lost"] == 90
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("writer fell behind: 90 data lost" in m for m in messages), messages


def test_a_failing_writer_raises_from_stop_and_records_the_error(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write(self: Recording, batch: list[Any]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Recording, "_write_batch", broken_write)
    path = tmp_path / "full.h5"
    rec = record(daemon, path, chunk_rows=1)
    feed._feed(1.0)
    assert rec.wait(10.0)
    feed._feed(2.0)  # the failed recording has unsubscribed
    with pytest.raises(OSError, match="No space"):
        rec.stop()
    rec.stop()  # raised once; later calls are quiet
    assert (rec.recorded, rec.lost) == (0, 1)
    error = daemon.get_last_error("feed")
    assert error is not None and error["type"] == "OSError"
    assert load_recording(path)["metadata"]["ended_by"] == "error"


def test_a_disk_running_full_stops_the_recording_and_keeps_the_file_readable(
    daemon: LabDaemon, feed: FeedSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = shutil.disk_usage
    free = {"bytes": 10**12}

    def disk_usage(path: Any) -> Any:
        return real(path)._replace(free=free["bytes"])

    monkeypatch.setattr("labd.recording.shutil.disk_usage", disk_usage)
    path = tmp_path / "filling.h5"
    watcher: list[Any] = []
    daemon.start_streaming("feed", watcher.append)
    rec = record(daemon, path, chunk_rows=4, min_free_bytes=1_000_000)
    feed._feed(*range(100))
    assert wait_until(lambda: rec.recorded == 100)
    free["bytes"] = 500_000  # someone else fills the disk
    feed._feed(*range(100, 110))
    assert rec.wait(10.0) and not rec.is_recording()
    with pytest.raises(OSError, match="disk almost full") as raised:
        rec.stop()
    assert raised.value.errno == 28
    error = daemon.get_last_error("feed")
    assert error is not None and "disk almost full" in error["message"]
    feed._feed(*range(110, 120))  # the stream goes on for its other subscriber
    assert watcher == list(range(120))
    loaded = load_recording(path)
    assert loaded["data"].tolist() == list(range(100))
    assert loaded["metadata"]["ended_by"] == "error"
    assert (rec.recorded, rec.recorded + rec.lost) == (100, 110)


_KILLED_RECORDER = """
import sys, time
import labd

class Counter:
    def __init__(self, device_id):
        self._callback = None
    def start_streaming(self, callback):
        if self.is_streaming():
            return
        self._callback = callback
    def stop_streaming(self):
        self._callback = None
    def is_streaming(self):
        return self._callback is not None

daemon = labd.LabDaemon()
counter = daemon.add_device("counter", Counter)
rec = daemon.record("counter", sys.argv[1], flush_interval=0.1)
n = 0
while True:  # until killed
    counter._callback({"n": n, "trace": [float(n)] * 32})
    n += 1
    if n == 2000:
        while rec.recorded < 2000:
            time.sleep(0.01)
        time.sleep(0.5)  # several flush intervals
        print("flushed", flush=True)
    time.sleep(0.0005)
"""


def test_a_recording_killed_mid_write_leaves_a_readable_file(tmp_path: Path) -> None:
    import signal
    import subprocess

    path = tmp_path / "killed.h5"
    script = tmp_path / "recorder.py"
    script.write_text(_KILLED_RECORDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    loaded = load_recording(path)
    rows = len(loaded["sequence"])
    assert rows >= 2000
    assert loaded["sequence"].tolist() == list(range(rows))
    assert [datum["n"] for datum in loaded["data"]] == list(range(rows))
    assert "stopped_at" not in loaded["metadata"]  # it never finished


# ------------------------------------------------------------------ the hub's meta hook


@pytest.mark.parametrize("queue_size", [None, 10])
def test_subscribers_can_ask_for_sequence_and_timestamp(
    daemon: LabDaemon, feed: FeedSource, queue_size: int | None
) -> None:
    got: list[tuple[int, float, Any]] = []
    stream = daemon.device_record("feed").stream
    assert stream is not None
    before = time.time()
    sub = stream.subscribe(
        lambda seq, ts, datum: got.append((seq, ts, datum)),
        queue_size=queue_size,
        with_meta=True,
    )
    assert sub is not None
    feed._feed("a", "b", "c")
    assert wait_until(lambda: len(got) == 3)
    assert [(seq, datum) for seq, _, datum in got] == [(0, "a"), (1, "b"), (2, "c")]
    assert all(before - 1.0 <= ts <= time.time() + 1.0 for _, ts, _ in got)
    sub.close()


def test_shutdown_finishes_open_recordings(tmp_path: Path) -> None:
    daemon = LabDaemon()
    source: FeedSource = daemon.add_device("feed", FeedSource)
    path = tmp_path / "at-shutdown.h5"
    rec = record(daemon, path)
    source._feed(1.0, 2.0, 3.0)
    daemon.shutdown(timeout=10.0)
    assert not rec.is_recording()
    loaded = load_recording(path)
    assert loaded["sequence"].tolist() == [0, 1, 2]
    assert loaded["metadata"]["recorded"] == 3
