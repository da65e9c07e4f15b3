"""JSON and HDF5 files and capture_metadata from labd.datafiles."""

from __future__ import annotations

import json
import platform
import socket
import sys
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import orjson
import pytest

import labd
from labd.datafiles import (
    LabDaemonJSONEncoder,
    capture_metadata,
    json_default,
    load_hdf5,
    load_json,
    save_hdf5,
    save_json,
)

# ---------------------------------------------------------------------------- JSON


def test_json_round_trip_with_numpy(tmp_path: Path) -> None:
    data = {
        "trace": np.arange(6, dtype=np.int16).reshape(2, 3),
        "power": np.float32(0.5),
        "count": np.int64(7),
        "ok": np.bool_(True),
        "wavelengths": np.linspace(1500.0, 1600.0, 3),
        "nested": {"values": [np.uint8(1), np.float64(2.5)]},
    }
    path = save_json(data, tmp_path / "scan.json")
    loaded = load_json(path)
    assert loaded == {
        "trace": [[0, 1, 2], [3, 4, 5]],
        "power": 0.5,
        "count": 7,
        "ok": True,
        "wavelengths": [1500.0, 1550.0, 1600.0],
        "nested": {"values": [1, 2.5]},
    }
    assert type(loaded["count"]) is int
    assert type(loaded["ok"]) is bool
    assert type(loaded["power"]) is float


def test_json_datetimes_keep_their_offset(tmp_path: Path) -> None:
    cet = timezone(timedelta(hours=1))
    aware = datetime(2026, 11, 24, 18, 55, 40, 123456, tzinfo=cet)
    data = {"utc": aware.astimezone(UTC), "local": aware, "day": date(2026, 11, 24)}
    loaded = load_json(save_json(data, tmp_path / "t.json"))
    assert loaded["local"] == "2026-11-24T18:55:40.123456+01:00"
    assert loaded["utc"] == "2026-11-24T17:55:40.123456+00:00"
    assert datetime.fromisoformat(loaded["local"]) == aware
    assert loaded["day"] == "2026-11-24"


def test_naive_datetimes_are_taken_as_local_time() -> None:
    naive = datetime(2026, 6, 1, 12, 0, 0)
    text = json_default(naive)
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None
    assert parsed == naive.astimezone()
    assert parsed.replace(tzinfo=None) == naive


def test_json_default_conversions() -> None:
    assert json_default(Path("/data/run 1.h5")) == str(Path("/data/run 1.h5"))
    assert json_default(PurePosixPath("a/b")) == "a/b"
    assert json_default({3, 1, 2}) == [1, 2, 3]
    assert sorted(json_default({1, "a"}), key=str) == [1, "a"]
    assert json_default((1, 2)) == [1, 2]
    assert json_default(time(9, 30)) == "09:30:00"
    assert json_default(1 + 2j) == {"real": 1.0, "imag": 2.0}
    assert json_default(np.complex64(1 - 1j)) == {"real": 1.0, "imag": -1.0}
    assert json_default(np.str_("x")) == "x"
    complex_array = json.loads(json.dumps(np.array([1j]), cls=LabDaemonJSONEncoder))
    assert complex_array == [{"real": 0.0, "imag": 1.0}]


@pytest.mark.parametrize("value", [object(), b"raw", np.datetime64("2026-01-01"), Ellipsis])
def test_unknown_types_raise_type_error_naming_the_type(value: Any) -> None:
    with pytest.raises(TypeError, match=type(value).__qualname__):
        json_default(value)
    with pytest.raises(TypeError):
        json.dumps({"x": value}, cls=LabDaemonJSONEncoder)


def test_the_same_rule_serves_orjson() -> None:
    data = {
        "a": np.arange(3, dtype=np.int32),
        "b": np.float32(1.5),
        "c": np.bool_(False),
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "where": Path("x"),
    }
    via_orjson = orjson.loads(
        orjson.dumps(data, default=json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    )
    via_json = json.loads(json.dumps(data, cls=LabDaemonJSONEncoder))
    assert via_orjson == via_json
    assert via_json["when"] == "2026-01-02T03:04:05+00:00"


def test_save_json_replaces_files_whole(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_json({"old": True}, path)
    with pytest.raises(TypeError):
        save_json({"bad": object()}, path)
    assert load_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
    save_json({"a": 1}, str(path), indent=None)
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n'


# ---------------------------------------------------------------------------- HDF5


@pytest.fixture
def h5py() -> Any:
    return pytest.importorskip("h5py")


def test_hdf5_round_trip_keeps_structure_and_dtypes(tmp_path: Path, h5py: Any) -> None:
    data: dict[str, Any] = {
        "scan": {
            "counts": np.arange(10, dtype=np.int16),
            "power": np.linspace(0, 1, 5, dtype=np.float32),
            "mask": np.array([True, False, True]),
            "field": np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
            "image": np.ones((3, 4), dtype=np.uint8),
            "deep": {"deeper": {"x": np.float64(1.25)}},
        },
        "label": "Spektrum λ=1550 nm",
        "names": ["x", "y", "ä"],
        "text_array": np.array(["a", "bc"]),
        "samples": [1, 2, 3],
        "float_list": [0.5, 1.5],
        "n": 42,
        "gain": 2.5,
        "enabled": True,
        "z": 1 - 1j,
        "i8": np.int8(-3),
        "empty": {},
    }
    path = save_hdf5(data, tmp_path / "run.h5")
    loaded = load_hdf5(path)

    assert list(loaded) == list(data)  # key order kept
    assert list(loaded["scan"]) == list(data["scan"])
    for key in ("counts", "power", "mask", "field", "image"):
        assert loaded["scan"][key].dtype == data["scan"][key].dtype
        np.testing.assert_array_equal(loaded["scan"][key], data["scan"][key])
    assert loaded["scan"]["deep"]["deeper"]["x"] == 1.25
    assert type(loaded["label"]) is str
    assert loaded["label"] == "Spektrum λ=1550 nm"
    assert loaded["names"].tolist() == ["x", "y", "ä"]
    assert loaded["text_array"].dtype.kind == "U"
    assert loaded["text_array"].tolist() == ["a", "bc"]
    assert loaded["samples"].dtype == np.int64
    assert loaded["samples"].tolist() == [1, 2, 3]
    assert loaded["float_list"].dtype == np.float64
    assert loaded["n"] == 42 and loaded["n"].dtype == np.int64
    assert loaded["gain"] == 2.5 and loaded["gain"].dtype == np.float64
    assert loaded["enabled"] == np.True_ and loaded["enabled"].dtype == np.bool_
    assert loaded["z"] == 1 - 1j
    assert loaded["i8"] == -3 and loaded["i8"].dtype == np.int8
    assert loaded["empty"] == {}


def test_hdf5_metadata_round_trip(tmp_path: Path, h5py: Any) -> None:
    metadata = {
        "operator": "Ada",
        "temperature_K": 4.2,
        "shots": 100,
        "calibrated": False,
        "offsets": np.array([0.1, 0.2]),
        "settings": {"gain": 3, "filters": ["ND1", "ND2"], "nothing": None},
        "channels": [1, 2, 3],
        "note": None,
        "taken": datetime(2026, 1, 1, tzinfo=UTC),
    }
    path = save_hdf5({"x": np.zeros(3)}, tmp_path / "m.h5", metadata=metadata)
    data, loaded = load_hdf5(path, return_metadata=True)
    np.testing.assert_array_equal(data["x"], np.zeros(3))
    assert list(loaded) == list(metadata)
    assert loaded["operator"] == "Ada"
    assert type(loaded["temperature_K"]) is float and loaded["temperature_K"] == 4.2
    assert type(loaded["shots"]) is int and loaded["shots"] == 100
    assert loaded["calibrated"] is False
    np.testing.assert_array_equal(loaded["offsets"], metadata["offsets"])
    assert loaded["settings"] == {"gain": 3, "filters": ["ND1", "ND2"], "nothing": None}
    assert loaded["channels"] == [1, 2, 3]
    assert loaded["note"] is None
    assert loaded["taken"] == "2026-01-01T00:00:00+00:00"
    # Nested values are stored as JSON text in a string attribute.
    with h5py.File(path, "r") as handle:
        assert json.loads(handle.attrs["settings"]) == loaded["settings"]


def test_hdf5_with_capture_metadata(tmp_path: Path, h5py: Any) -> None:
    metadata = capture_metadata(sample="S1")
    path = save_hdf5({"y": [1.0]}, tmp_path / "c.h5", metadata=metadata)
    _, loaded = load_hdf5(path, return_metadata=True)
    assert loaded == metadata


def test_hdf5_refuses_to_overwrite_unless_asked(tmp_path: Path, h5py: Any) -> None:
    path = tmp_path / "once.h5"
    save_hdf5({"v": 1}, path)
    with pytest.raises(FileExistsError) as caught:
        save_hdf5({"v": 2}, path)
    assert str(path) in str(caught.value)
    assert caught.value.filename == str(path)
    assert load_hdf5(path)["v"] == 1
    save_hdf5({"w": 3}, path, overwrite=True)
    assert load_hdf5(path) == {"w": 3}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": {"b": object()}}, "/a/b"),
        ({"a": None}, "/a"),
        ({"mixed": [1, "x"]}, "/mixed"),
        ({"ragged": [[1, 2], [3]]}, "/ragged"),
        ({"objs": np.array([1, None], dtype=object)}, "/objs"),
        ({1: 2}, "str"),
    ],
)
def test_hdf5_unsupported_values_leave_no_file(
    tmp_path: Path, h5py: Any, data: Any, message: str
) -> None:
    path = tmp_path / "bad.h5"
    with pytest.raises(TypeError, match=message):
        save_hdf5(data, path)
    assert not path.exists()


def test_hdf5_rejects_names_with_slashes(tmp_path: Path, h5py: Any) -> None:
    with pytest.raises(ValueError, match="a/b"):
        save_hdf5({"a/b": 1}, tmp_path / "x.h5")


def test_hdf5_names_the_extra_when_h5py_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"labd\[hdf5\]"):
        save_hdf5({"v": 1}, tmp_path / "x.h5")
    with pytest.raises(ImportError, match=r"labd\[hdf5\]"):
        load_hdf5(tmp_path / "x.h5")


# ------------------------------------------------------------------------ metadata


def test_capture_metadata_fields() -> None:
    before = datetime.now(UTC)
    metadata = capture_metadata(sample="S1", run=3)
    after = datetime.now(UTC)
    taken = datetime.fromisoformat(metadata["timestamp"])
    assert taken.utcoffset() == timedelta(0)
    assert before <= taken <= after
    assert metadata["hostname"] == socket.gethostname()
    assert isinstance(metadata["user"], str) and metadata["user"]
    assert metadata["platform"] == platform.platform()
    assert metadata["python_version"] == platform.python_version()
    assert metadata["labd_version"] == labd.__version__
    assert metadata["numpy_version"] == np.__version__
    assert metadata["sample"] == "S1"
    assert metadata["run"] == 3
    assert json.loads(json.dumps(metadata)) == metadata
