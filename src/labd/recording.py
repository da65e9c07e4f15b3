"""Lossless recording of a device stream to an HDF5 file.

``daemon.record(device, path)`` subscribes to the device's stream (starting it when
idle, like any local subscriber) and appends every datum, with the stream's own
sequence number and POSIX timestamp, to an HDF5 file. The subscriber only appends to
a bounded in-memory buffer, so the device thread never waits for the disk; a writer
thread ``labd-record-<device>`` takes batches from it and appends them to resizable,
chunked datasets. When the buffer holds ``max_pending`` data the newest are dropped
and counted in ``lost`` (with a logged warning): the file then shows the gap in
``sequence``.

File layout::

    /                       attrs: labd_recording (format version), device_id,
                            device_type, layout ("scalar" | "array" | "dict" | "json")
    /sequence               int64 (N,)   the stream's sequence numbers
    /timestamp              float64 (N,) POSIX seconds
    /data                   layout "scalar": (N,) of the data's dtype
                            layout "array":  (N, *shape) of the data's dtype
                            layout "json":   (N,) UTF-8 JSON text, one datum per row
    /data/<key>             layout "dict": one dataset per key, as for scalars/arrays
    /data_json/sequence     data that did not fit the layout, as JSON text
    /data_json/timestamp      (created only when needed)
    /data_json/data
    /metadata               attrs: capture_metadata(), the caller's metadata,
                            device_id, device_type, started_at, and at the end
                            stopped_at, recorded, lost, ended_by

The first datum decides the layout: a number (Python or NumPy) gives ``scalar``, a
numeric NumPy array gives ``array`` (its shape is fixed from then on), a dict of
those keyed by valid HDF5 names gives ``dict``; anything else (strings, lists,
nested structures, empty arrays) gives ``json``. A later datum that does not fit (a
new shape, a dtype that cannot be cast safely, other keys) is kept, not lost: it
goes to ``data_json`` as JSON text with its sequence and timestamp, and a warning
is logged once. A datum that cannot be encoded as JSON either is counted in
``lost`` and logged.

``recorded + lost`` equals the data the stream delivered to the recording.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import shutil
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from labd.datafiles import (
    _JSON_ATTRS,
    _prepare_metadata,
    _read_metadata,
    _require_h5py,
    capture_metadata,
    json_default,
)
from labd.exceptions import DeviceError

if TYPE_CHECKING:
    import os

    from labd.streams import DeviceStream, Subscription


class _Daemon(Protocol):
    """What a recording needs of its daemon (which imports this module)."""

    def record_error(
        self, device_id: str, exc: BaseException, origin: Any = ..., **context: Any
    ) -> None: ...


class _Device(Protocol):
    """What a recording needs of the daemon's record of a device."""

    device_id: str
    device_type: str
    stream: DeviceStream | None


__all__ = ["FORMAT_VERSION", "Recording", "load_recording"]

log = logging.getLogger(__name__)

#: Version of the file layout, stored in the root attribute ``labd_recording``.
FORMAT_VERSION = 1

# Keys labd writes into the metadata group itself; caller metadata may not use them.
_RESERVED_METADATA = frozenset(
    {"device_id", "device_type", "started_at", "stopped_at", "recorded", "lost", "ended_by"}
)
# Upper bound on one HDF5 chunk; rows per chunk shrink for large arrays.
_CHUNK_BYTES = 1 << 20
# A batch taken from the buffer holds at most this many chunks' worth of rows.
_BATCH_CHUNKS = 8
# While data keep being dropped, repeat the warning at most this often (seconds).
_LOSS_REPORT_INTERVAL = 5.0
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

Row = tuple[int, float, Any]


# ----------------------------------------------------------------------- layouts


class _Column:
    """A fixed shape and numeric dtype: how one sequence of values is stored."""

    __slots__ = ("_dataset", "_takes_bool", "_takes_float", "_takes_int", "dtype", "shape")

    def __init__(self, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        self.dtype = dtype
        self.shape = shape
        scalar = shape == ()
        self._takes_bool = scalar and dtype.kind == "b"
        self._takes_int = scalar and (dtype.kind in "iu" or np.can_cast(np.int64, dtype, "safe"))
        self._takes_float = scalar and np.can_cast(np.float64, dtype, "safe")
        self._dataset: Any = None

    @classmethod
    def of(cls, value: Any) -> _Column | None:
        """The column a first value calls for, or None when it is not a number or array."""
        if isinstance(value, bool):
            return cls(np.dtype(np.bool_), ())
        if isinstance(value, int):
            return cls(np.dtype(np.int64), ()) if _INT64_MIN <= value <= _INT64_MAX else None
        if isinstance(value, float):
            return cls(np.dtype(np.float64), ())
        if isinstance(value, complex):
            return cls(np.dtype(np.complex128), ())
        if isinstance(value, np.ndarray | np.generic):
            if value.dtype.kind not in "biufc" or (value.shape and value.size == 0):
                return None
            return cls(value.dtype, tuple(value.shape))
        return None

    def fits(self, value: Any) -> bool:
        """Whether ``value`` can be stored in this column without changing it."""
        kind = type(value)
        if kind is float:
            return self._takes_float
        if kind is np.ndarray or isinstance(value, np.ndarray | np.generic):
            dtype = value.dtype
            return (
                value.shape == self.shape
                and dtype.kind in "biufc"
                and (dtype == self.dtype or np.can_cast(dtype, self.dtype, "safe"))
                and (dtype.kind == "b") == (self.dtype.kind == "b")
            )
        if isinstance(value, bool):
            return self._takes_bool
        if isinstance(value, int):
            if not self._takes_int:
                return False
            if self.dtype.kind in "iu":
                info = np.iinfo(self.dtype)
                return int(info.min) <= value <= int(info.max)
            return True
        if isinstance(value, float):
            return self._takes_float
        if isinstance(value, complex):
            return self.shape == () and np.can_cast(np.complex128, self.dtype, "safe")
        return False

    def create(self, group: Any, name: str, chunk_rows: int) -> None:
        row_bytes = max(1, self.dtype.itemsize * math.prod(self.shape))
        rows = max(1, min(chunk_rows, _CHUNK_BYTES // row_bytes))
        self._dataset = group.create_dataset(
            name,
            shape=(0, *self.shape),
            maxshape=(None, *self.shape),
            dtype=self.dtype,
            chunks=(rows, *self.shape),
        )

    def write(self, values: list[Any], start: int) -> None:
        if self.shape == ():
            block = np.array(values, dtype=self.dtype)
        else:
            block = np.stack(values).astype(self.dtype, copy=False)
        end = start + len(values)
        self._dataset.resize(end, axis=0)
        self._dataset[start:end] = block

    def describe(self) -> str:
        return f"{self.dtype}{list(self.shape) if self.shape else ''}"


class _Layout:
    """How the ``data`` of a recording is stored; chosen from the first datum."""

    kind = "json"

    def fits(self, datum: Any) -> bool:
        return True

    def create(self, h5py: Any, root: Any, chunk_rows: int) -> None:
        self._dataset = _text_dataset(h5py, root, "data", chunk_rows)

    def write(self, data: list[Any], start: int) -> None:
        # Rows of a JSON layout arrive already encoded.
        _append(self._dataset, start, np.array(data, dtype=object))

    def describe(self) -> str:
        return "json"


class _ColumnLayout(_Layout):
    def __init__(self, column: _Column) -> None:
        self.column = column
        self.kind = "scalar" if column.shape == () else "array"

    def fits(self, datum: Any) -> bool:
        return self.column.fits(datum)

    def create(self, h5py: Any, root: Any, chunk_rows: int) -> None:
        self.column.create(root, "data", chunk_rows)

    def write(self, data: list[Any], start: int) -> None:
        self.column.write(data, start)

    def describe(self) -> str:
        return f"{self.kind} {self.column.describe()}"


class _DictLayout(_Layout):
    kind = "dict"

    def __init__(self, columns: dict[str, _Column]) -> None:
        self.columns = columns

    def fits(self, datum: Any) -> bool:
        if type(datum) is not dict or len(datum) != len(self.columns):
            return False
        for key, column in self.columns.items():
            if key not in datum or not column.fits(datum[key]):
                return False
        return True

    def create(self, h5py: Any, root: Any, chunk_rows: int) -> None:
        group = root.create_group("data", track_order=True)
        for key, column in self.columns.items():
            column.create(group, key, chunk_rows)

    def write(self, data: list[Any], start: int) -> None:
        for key, column in self.columns.items():
            column.write([datum[key] for datum in data], start)

    def describe(self) -> str:
        inner = ", ".join(f"{k}: {c.describe()}" for k, c in self.columns.items())
        return f"dict {{{inner}}}"


def _choose_layout(datum: Any) -> _Layout:
    column = _Column.of(datum)
    if column is not None:
        return _ColumnLayout(column)
    if isinstance(datum, Mapping) and datum:
        columns: dict[str, _Column] = {}
        for key, value in datum.items():
            if not isinstance(key, str) or not key or "/" in key or key == ".":
                return _Layout()
            column = _Column.of(value)
            if column is None:
                return _Layout()
            columns[key] = column
        return _DictLayout(columns)
    return _Layout()


def _text_dataset(h5py: Any, group: Any, name: str, chunk_rows: int) -> Any:
    return group.create_dataset(
        name,
        shape=(0,),
        maxshape=(None,),
        dtype=h5py.string_dtype("utf-8"),
        chunks=(chunk_rows,),
    )


def _row_dataset(group: Any, name: str, dtype: Any, chunk_rows: int) -> Any:
    return group.create_dataset(
        name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk_rows,)
    )


def _append(dataset: Any, start: int, block: Any) -> None:
    end = start + len(block)
    dataset.resize(end, axis=0)
    dataset[start:end] = block


def _to_json(datum: Any) -> str | None:
    try:
        return json.dumps(datum, default=json_default, ensure_ascii=False)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def _write_metadata(attrs: Any, metadata: Mapping[str, Any]) -> None:
    values, json_keys = _prepare_metadata(metadata)
    for key, value in values.items():
        attrs[key] = value
    attrs[_JSON_ATTRS] = json.dumps(json_keys)


# --------------------------------------------------------------------- recording


class Recording:
    """Records every datum of one device stream, with sequence and timestamp, to HDF5.

    Made by ``daemon.record(device, path, metadata=None, **options)``; a context manager
    whose exit calls :meth:`stop`. See the module docstring for the file layout.
    """

    def __init__(
        self,
        daemon: _Daemon,
        record: _Device,
        path: str | os.PathLike[str],
        metadata: Mapping[str, Any] | None = None,
        *,
        max_pending: int = 100_000,
        chunk_rows: int = 1024,
        flush_interval: float = 0.5,
        overwrite: bool = False,
        stream_kwargs: Mapping[str, Any] | None = None,
        min_free_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        for name, value in (("max_pending", max_pending), ("chunk_rows", chunk_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(flush_interval, int | float) and flush_interval > 0):
            raise ValueError(f"flush_interval must be a number > 0, got {flush_interval!r}")
        if isinstance(min_free_bytes, bool) or not isinstance(min_free_bytes, int):
            raise ValueError(f"min_free_bytes must be an integer >= 0, got {min_free_bytes!r}")
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be an integer >= 0, got {min_free_bytes!r}")
        h5py = _require_h5py()
        stream = record.stream
        if stream is None or not stream.can_stream:
            raise DeviceError(f"device {record.device_id!r} cannot stream (no start_streaming)")
        caller = dict(metadata or {})
        clash = sorted(_RESERVED_METADATA.intersection(caller))
        if clash:
            raise ValueError(f"metadata keys {clash} are written by labd itself; rename them")
        self.path = Path(path)
        self.device_id = record.device_id
        self.device_type = record.device_type
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self._daemon = daemon
        self._h5py = h5py
        self._max_pending = max_pending
        self._chunk_rows = chunk_rows
        self._batch_rows = chunk_rows * _BATCH_CHUNKS
        self._flush_interval = float(flush_interval)
        self._min_free_bytes = min_free_bytes
        self._metadata: dict[str, Any] = capture_metadata(**caller)
        self._metadata.update(
            device_id=self.device_id, device_type=self.device_type, started_at=self.started_at
        )
        _prepare_metadata(self._metadata)  # unsupported metadata fails before the file exists

        self._pending: deque[Row] = deque()
        self._count_lock = threading.Lock()
        self._dropped = 0  # buffer full
        self._unwritable = 0  # not encodable, or pending when the writer failed
        self._burst = 0  # dropped since the last warning
        self._burst_started: float | None = None  # writer thread only, like the next one
        self._dropped_seen = 0
        self._recorded = 0
        self._rows = 0  # rows of the main table
        self._in_flight = 0  # rows of the batch being written, not yet written or lost
        self._other_rows = 0  # rows of data_json
        self._layout: _Layout | None = None
        self._other: tuple[Any, Any, Any] | None = None
        self._ended_by = "stop"
        self._error: BaseException | None = None
        self._error_raised = False
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._subscription: Subscription | None = None

        self._file = self._create_file(h5py, overwrite)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"labd-record-{self.device_id}", daemon=True
        )
        self._writer.start()
        try:
            self._subscription = stream.subscribe(
                self._take,
                dict(stream_kwargs or {}),
                on_end=self._stream_ended,
                explicit=True,
                with_meta=True,
            )
        except BaseException:
            self._closing.set()
            self._wake.set()
            self._writer.join(5.0)
            self.path.unlink(missing_ok=True)
            raise
        log.info("recording device %r to %s", self.device_id, self.path)

    def _create_file(self, h5py: Any, overwrite: bool) -> Any:
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                errno.EEXIST,
                "refusing to overwrite an existing file (pass overwrite=True)",
                str(self.path),
            )
        handle = h5py.File(self.path, "w" if overwrite else "w-", track_order=True)
        try:
            handle.attrs["labd_recording"] = FORMAT_VERSION
            handle.attrs["device_id"] = self.device_id
            handle.attrs["device_type"] = self.device_type
            handle.attrs["layout"] = "empty"
            self._sequence = _row_dataset(handle, "sequence", np.int64, self._chunk_rows)
            self._timestamp = _row_dataset(handle, "timestamp", np.float64, self._chunk_rows)
            _write_metadata(handle.create_group("metadata").attrs, self._metadata)
            handle.flush()
        except BaseException:
            handle.close()
            self.path.unlink(missing_ok=True)
            raise
        return handle

    # -- the device thread's path: O(1), never blocks -------------------------------

    def _take(self, sequence: int, timestamp: float, datum: Any) -> None:
        pending = self._pending
        if len(pending) < self._max_pending:
            pending.append((sequence, timestamp, datum))
            if len(pending) == self._chunk_rows:
                self._wake.set()
            return
        with self._count_lock:
            self._dropped += 1
            self._burst += 1

    def _stream_ended(self, error: BaseException | None) -> None:
        if not self._closing.is_set():
            self._ended_by = "stream_error" if error is not None else "stream_end"
            log.info("stream of device %r ended; finishing recording %s", self.device_id, self.path)
        self._closing.set()
        self._wake.set()

    # -- public ---------------------------------------------------------------------

    @property
    def recorded(self) -> int:
        """Data written to the file so far."""
        return self._recorded

    @property
    def lost(self) -> int:
        """Data dropped (writer behind, or not encodable); each is a gap in ``sequence``."""
        return self._dropped + self._unwritable

    @property
    def pending(self) -> int:
        """Data received but not yet written."""
        return len(self._pending)

    def is_recording(self) -> bool:
        """True until the recording has finished and its file is complete and closed."""
        return not self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the file is complete and closed; False if ``timeout`` passed first."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop receiving, write what is pending, finish and close the file. Idempotent.

        The device stream keeps running for its other subscribers (stop it with
        ``daemon.stop_streaming``). If the writer failed, its error is raised here once.
        """
        subscription = self._subscription
        if subscription is not None:
            subscription.close()
        self._closing.set()
        self._wake.set()
        if threading.current_thread() is not self._writer:
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning(
                    "recording %s: still writing %d pending data after %s s;"
                    " the file is closed when they are written",
                    self.path,
                    self.pending,
                    timeout,
                )
        if self._error is not None and not self._error_raised and self._finished.is_set():
            self._error_raised = True
            raise self._error

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "recording" if self.is_recording() else "finished"
        return (
            f"<Recording {self.device_id!r} -> {str(self.path)!r} {state}"
            f" recorded={self.recorded} lost={self.lost}>"
        )

    # -- the writer thread ------------------------------------------------------------

    def _write_loop(self) -> None:
        last_flush = time.monotonic()
        try:
            while True:
                closing = self._closing.is_set()
                batch = self._take_batch()
                if batch:
                    self._in_flight = len(batch)
                    self._check_free_space()
                    self._write_batch(batch)
                    self._in_flight = 0
                self._report_losses()
                now = time.monotonic()
                if now - last_flush >= self._flush_interval:
                    self._file.flush()
                    last_flush = now
                if closing and not self._pending:
                    break
                if not batch:
                    self._wake.wait(self._flush_interval)
                    self._wake.clear()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._finish()

    def _check_free_space(self) -> None:
        """Stop before the disk is full: a write that fails halfway can leave the file's
        last flush unreadable, while a recording stopped here closes a readable file."""
        if not self._min_free_bytes:
            return
        free = shutil.disk_usage(self.path.parent).free
        if free < self._min_free_bytes:
            raise OSError(
                errno.ENOSPC,
                f"disk almost full: {free} bytes free, less than min_free_bytes"
                f" ({self._min_free_bytes}); recording stopped, the file stays readable",
                str(self.path),
            )

    def _take_batch(self) -> list[Row]:
        pending = self._pending
        count = min(len(pending), self._batch_rows)
        return [pending.popleft() for _ in range(count)]

    def _write_batch(self, batch: list[Row]) -> None:
        layout = self._layout
        if layout is None:
            layout = self._layout = _choose_layout(batch[0][2])
            layout.create(self._h5py, self._file, self._chunk_rows)
            self._file.attrs["layout"] = layout.kind
            log.debug("recording %s: layout %s", self.path, layout.describe())
        main: list[Row] = []
        other: list[Row] = []
        if layout.kind == "json":
            main = self._encode(batch)
        else:
            for row in batch:
                (main if layout.fits(row[2]) else other).append(row)
            if other:
                if self._other is None:
                    log.warning(
                        "recording %s: datum #%d does not fit the layout (%s) set by the"
                        " first datum; it and later misfits are stored as JSON in data_json",
                        self.path,
                        other[0][0],
                        layout.describe(),
                    )
                other = self._encode(other)
        if main:
            start, count = self._rows, len(main)
            _append(self._sequence, start, np.fromiter((r[0] for r in main), np.int64, count))
            _append(self._timestamp, start, np.fromiter((r[1] for r in main), np.float64, count))
            layout.write([r[2] for r in main], start)
            self._rows = start + count
            self._recorded += count
            self._in_flight -= count
        if other:
            self._write_other(other)
            self._recorded += len(other)
        self._in_flight = 0

    def _encode(self, rows: list[Row]) -> list[Row]:
        encoded: list[Row] = []
        failed: list[int] = []
        for sequence, timestamp, datum in rows:
            text = _to_json(datum)
            if text is None:
                failed.append(sequence)
            else:
                encoded.append((sequence, timestamp, text))
        if failed:
            with self._count_lock:
                self._unwritable += len(failed)
            self._in_flight -= len(failed)
            log.warning(
                "recording %s: %d data could not be encoded (first #%d); counted as lost",
                self.path,
                len(failed),
                failed[0],
            )
        return encoded

    def _write_other(self, rows: list[Row]) -> None:
        if self._other is None:
            group = self._file.create_group("data_json")
            self._other = (
                _row_dataset(group, "sequence", np.int64, self._chunk_rows),
                _row_dataset(group, "timestamp", np.float64, self._chunk_rows),
                _text_dataset(self._h5py, group, "data", self._chunk_rows),
            )
        sequences, timestamps, texts = self._other
        start, count = self._other_rows, len(rows)
        _append(sequences, start, np.fromiter((r[0] for r in rows), np.int64, count))
        _append(timestamps, start, np.fromiter((r[1] for r in rows), np.float64, count))
        _append(texts, start, np.array([r[2] for r in rows], dtype=object))
        self._other_rows = start + count

    def _report_losses(self, *, final: bool = False) -> None:
        """Warn once per burst of drops: when it ends (or every few seconds while it lasts)."""
        with self._count_lock:
            burst, dropped = self._burst, self._dropped
        if burst == 0:
            return
        now = time.monotonic()
        if self._burst_started is None:
            self._burst_started = now
        ongoing = dropped != self._dropped_seen
        self._dropped_seen = dropped
        if ongoing and not final and now - self._burst_started < _LOSS_REPORT_INTERVAL:
            return
        with self._count_lock:
            burst, self._burst = self._burst, 0
        self._burst_started = None
        log.warning(
            "recording %s: writer fell behind: %d data lost (%d lost in total)",
            self.path,
            burst,
            self.lost,
        )

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self._ended_by = "error"
        log.error("recording %s failed: %s", self.path, exc, exc_info=exc)
        subscription = self._subscription
        if subscription is not None:
            subscription.close()
        self._closing.set()
        # What was taken but not written, and what still waits, is lost.
        abandoned = self._in_flight + len(self._pending)
        self._in_flight = 0
        self._pending.clear()
        with self._count_lock:
            self._unwritable += abandoned
        try:
            self._daemon.record_error(self.device_id, exc, "framework", action="record")
        except Exception:
            log.debug("could not record the error of device %r", self.device_id, exc_info=True)

    def _finish(self) -> None:
        try:
            self._report_losses(final=True)
            self.stopped_at = time.time()
            self._metadata.update(
                stopped_at=self.stopped_at,
                recorded=self.recorded,
                lost=self.lost,
                ended_by=self._ended_by,
            )
            _write_metadata(self._file["metadata"].attrs, self._metadata)
        except Exception as exc:
            log.error("recording %s: could not write final metadata: %s", self.path, exc)
        finally:
            try:
                self._file.close()
            except Exception as exc:
                log.error("recording %s: closing the file failed: %s", self.path, exc)
            log.info(
                "recording %s finished: %d recorded, %d lost", self.path, self.recorded, self.lost
            )
            self._finished.set()


# ----------------------------------------------------------------------- loading


def load_recording(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a recording: ``sequence``, ``timestamp`` arrays, ``data`` and ``metadata``.

    ``data`` is an array of shape ``(N, ...)`` for scalar and array layouts, a dict of
    such arrays for the dict layout, and a list for JSON data. When some data did not
    fit the layout (``data_json``), every row is merged in sequence order and ``data``
    is a list (those rows come back as decoded JSON: lists, not arrays).
    """
    h5py = _require_h5py()
    with h5py.File(Path(path), "r") as handle:
        if "labd_recording" not in handle.attrs:
            raise ValueError(f"{path} is not a labd recording")
        layout = str(handle.attrs.get("layout", "empty"))
        columns = [handle["sequence"], handle["timestamp"]]
        if layout in ("scalar", "array", "json"):
            columns.append(handle["data"])
        elif layout == "dict":
            columns.extend(handle["data"].values())
        # A writer that failed mid-batch may leave one column longer than the others.
        rows = min(len(column) for column in columns)
        sequence = np.asarray(handle["sequence"][:rows], dtype=np.int64)
        timestamp = np.asarray(handle["timestamp"][:rows], dtype=np.float64)
        data: Any
        if layout in ("scalar", "array"):
            data = handle["data"][:rows]
        elif layout == "dict":
            data = {key: node[:rows] for key, node in handle["data"].items()}
        elif layout == "json":
            data = [json.loads(text) for text in handle["data"].asstr()[:rows]]
        else:
            data = []
        metadata = _read_metadata(handle["metadata"].attrs)
        other = handle.get("data_json")
        if other is not None and len(other["sequence"]):
            extra_seq = np.asarray(other["sequence"][()], dtype=np.int64)
            extra_ts = np.asarray(other["timestamp"][()], dtype=np.float64)
            extra = [json.loads(text) for text in other["data"].asstr()[()]]
            sequence, timestamp, data = _merge(
                sequence, timestamp, _rows_of(data, layout, rows), extra_seq, extra_ts, extra
            )
    return {"sequence": sequence, "timestamp": timestamp, "data": data, "metadata": metadata}


def _rows_of(data: Any, layout: str, rows: int) -> list[Any]:
    if layout == "dict":
        return [{key: values[i] for key, values in data.items()} for i in range(rows)]
    return list(data)


def _merge(
    sequence: np.ndarray[Any, Any],
    timestamp: np.ndarray[Any, Any],
    data: list[Any],
    extra_seq: np.ndarray[Any, Any],
    extra_ts: np.ndarray[Any, Any],
    extra: list[Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[Any]]:
    all_seq = np.concatenate([sequence, extra_seq])
    order = np.argsort(all_seq, kind="stable")
    everything = data + extra
    return (
        all_seq[order],
        np.concatenate([timestamp, extra_ts])[order],
        [everything[i] for i in order],
    )
