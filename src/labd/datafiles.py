"""Saving and loading lab data: JSON and HDF5 files, and the metadata that goes with them.

:func:`json_default` is labd's one rule for turning Python and NumPy values into
JSON. JSON files use it through :class:`LabDaemonJSONEncoder`, and the wire encoder
passes it to orjson, so a value looks the same in a file and over the network:

- NumPy arrays → (nested) lists; NumPy scalars → the matching ``int``/``float``/``bool``;
- ``datetime`` → ISO-8601 with its UTC offset; a naive ``datetime`` is taken to be
  local time (Python's convention, as ``datetime.now()`` returns) and gets the local
  offset; ``date`` and ``time`` → ``isoformat()``;
- paths → ``str``; sets and tuples → lists (sets sorted when their items allow);
- complex numbers → ``{"real": ..., "imag": ...}`` (loading leaves them as such dicts);
- anything else → ``TypeError`` naming the type.

HDF5 support needs the optional extra ``labd[hdf5]`` (h5py), imported on first use.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import platform
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from labd._version import __version__

__all__ = [
    "LabDaemonJSONEncoder",
    "capture_metadata",
    "json_default",
    "load_hdf5",
    "load_json",
    "save_hdf5",
    "save_json",
]

PathLike = str | os.PathLike[str]

# Root attribute listing the metadata keys stored as JSON text (nested values).
_JSON_ATTRS = "_labd_json_attributes"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def json_default(obj: Any) -> Any:
    """Convert a value JSON does not know into one it does (see the module docstring)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.complexfloating):
            return _complex_to_json(complex(obj))
        if isinstance(obj, np.str_):
            return str(obj)
    elif isinstance(obj, datetime):
        if obj.tzinfo is None or obj.utcoffset() is None:
            obj = obj.astimezone()
        return obj.isoformat()
    elif isinstance(obj, date | time):
        return obj.isoformat()
    elif isinstance(obj, PurePath):
        return str(obj)
    elif isinstance(obj, set | frozenset):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    elif isinstance(obj, tuple):
        return list(obj)
    elif isinstance(obj, complex):
        return _complex_to_json(obj)
    kind = type(obj)
    raise TypeError(
        f"Object of type {kind.__module__}.{kind.__qualname__} is not JSON serializable"
    )


def _complex_to_json(value: complex) -> dict[str, float]:
    return {"real": value.real, "imag": value.imag}


class LabDaemonJSONEncoder(json.JSONEncoder):
    """``json.JSONEncoder`` that applies :func:`json_default` (NumPy, datetimes, paths, ...)."""

    def default(self, o: Any) -> Any:
        return json_default(o)


def save_json(data: Any, path: PathLike, indent: int | None = 4) -> Path:
    """Write ``data`` as UTF-8 JSON; the file is replaced atomically, never left half-written."""
    target = Path(path)
    text = json.dumps(data, cls=LabDaemonJSONEncoder, indent=indent, ensure_ascii=False)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(scratch, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.write("\n")
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target


def load_json(path: PathLike) -> Any:
    """Read a JSON file (datetimes, arrays and so on come back in their JSON form)."""
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


# ---------------------------------------------------------------------------- HDF5


def _require_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            "HDF5 files need h5py; install it with: pip install 'labd[hdf5]'"
        ) from exc
    return h5py


@dataclass(frozen=True)
class _Text:
    """A str, or an array of str, to be stored as variable-length UTF-8 strings."""

    value: str | np.ndarray[Any, np.dtype[np.object_]]


def save_hdf5(
    data: Mapping[str, Any],
    path: PathLike,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write nested dicts of arrays, scalars and strings to an HDF5 file.

    Dicts become groups (key order kept); arrays and NumPy scalars become datasets
    with their dtype; Python ``bool``/``int``/``float``/``complex`` become ``bool``/
    ``int64``/``float64``/``complex128`` scalars; lists of numbers become arrays;
    ``str``, lists of ``str`` and NumPy string arrays become UTF-8 string datasets.
    ``metadata`` becomes attributes of the root group: strings, numbers and NumPy
    arrays as they are, anything else (dicts, lists, None, ...) as JSON text that
    :func:`load_hdf5` decodes. Every value is checked before the file is created, so
    an unsupported one (TypeError naming its key) leaves nothing on disk. An existing
    file raises FileExistsError unless ``overwrite=True``.
    """
    h5py = _require_h5py()
    target = Path(path)
    if not isinstance(data, Mapping):
        raise TypeError(f"save_hdf5 needs a dict of data, got {type(data).__name__}")
    tree = _prepare_group(data, "/")
    attributes, json_keys = _prepare_metadata(metadata or {})
    if target.exists() and not overwrite:
        raise FileExistsError(
            errno.EEXIST,
            "refusing to overwrite an existing file (pass overwrite=True)",
            str(target),
        )
    handle = h5py.File(target, "w" if overwrite else "w-", track_order=True)
    try:
        with handle:
            _write_group(h5py, handle, tree)
            for key, value in attributes.items():
                handle.attrs[key] = value
            if json_keys:
                handle.attrs[_JSON_ATTRS] = json.dumps(json_keys)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def load_hdf5(path: PathLike, return_metadata: bool = False) -> Any:
    """Read an HDF5 file into nested dicts; with ``return_metadata`` return ``(data, metadata)``.

    Groups come back as dicts, arrays as NumPy arrays with their dtype, scalar datasets
    as NumPy scalars of their dtype (``np.float64`` for a saved Python ``float``),
    variable-length strings as ``str`` (string arrays as NumPy ``str`` arrays).
    Metadata numbers come back as Python numbers and JSON-encoded values decoded.
    """
    h5py = _require_h5py()
    with h5py.File(Path(path), "r") as handle:
        data = _read_group(h5py, handle)
        if not return_metadata:
            return data
        return data, _read_metadata(handle.attrs)


def _prepare_group(mapping: Mapping[Any, Any], where: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"HDF5 names must be str, got {key!r} in {where}")
        if not key or "/" in key or key == ".":
            raise ValueError(f"{key!r} in {where} is not a valid HDF5 name (empty, '.' or has '/')")
        here = f"{where}{key}"
        if isinstance(value, Mapping):
            tree[key] = _prepare_group(value, here + "/")
        else:
            tree[key] = _prepare_dataset(value, here)
    return tree


def _prepare_dataset(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return _Text(str(value))
    if isinstance(value, list | tuple):
        if value and all(isinstance(item, str) for item in value):
            return _Text(np.array(value, dtype=object))
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise TypeError(f"{where}: cannot store this list as an array ({exc})") from None
        if array.dtype.kind not in "biufc":
            raise TypeError(f"{where}: lists must hold only numbers or only strings")
        return array
    if isinstance(value, np.ndarray):
        return _prepare_array(value, where)
    if isinstance(value, bool | int | float | complex | np.generic):
        try:
            array = np.asarray(value)
        except OverflowError:
            raise TypeError(f"{where}: {value!r} does not fit in int64") from None
        return _prepare_array(array, where)
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in HDF5")


def _prepare_array(array: np.ndarray[Any, Any], where: str) -> Any:
    kind = array.dtype.kind
    if kind == "U":
        return _Text(array.astype(object))
    if kind == "O":
        if all(isinstance(item, str) for item in array.flat):
            return _Text(array)
        raise TypeError(f"{where}: object arrays can be stored only when they hold str")
    if kind in "mM":
        raise TypeError(f"{where}: NumPy {array.dtype} cannot be stored in HDF5")
    return array


def _prepare_metadata(metadata: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    attributes: dict[str, Any] = {}
    json_keys: list[str] = []
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, got {key!r}")
        if key == _JSON_ATTRS:
            raise ValueError(f"metadata key {key!r} is reserved by labd")
        if _is_plain_attribute(value):
            attributes[key] = value
        else:
            attributes[key] = json.dumps(value, default=json_default)
            json_keys.append(key)
    return attributes, json_keys


def _is_plain_attribute(value: Any) -> bool:
    if isinstance(value, str | bool | float | complex | np.bool_ | np.number):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, np.ndarray) and value.dtype.kind in "biufc"


def _write_group(h5py: Any, group: Any, tree: dict[str, Any]) -> None:
    for name, node in tree.items():
        if isinstance(node, dict):
            _write_group(h5py, group.create_group(name, track_order=True), node)
        elif isinstance(node, _Text):
            group.create_dataset(name, data=node.value, dtype=h5py.string_dtype("utf-8"))
        else:
            group.create_dataset(name, data=node)


def _read_group(h5py: Any, group: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, node in group.items():
        if isinstance(node, h5py.Group):
            data[name] = _read_group(h5py, node)
        else:
            data[name] = _read_dataset(h5py, node)
    return data


def _read_dataset(h5py: Any, dataset: Any) -> Any:
    string_info = h5py.check_string_dtype(dataset.dtype)
    if string_info is not None and string_info.length is None:
        text = dataset.asstr()[()]
        return text if isinstance(text, str) else np.asarray(text, dtype=str)
    return dataset[()]


def _read_metadata(attrs: Any) -> dict[str, Any]:
    json_keys = set(json.loads(attrs[_JSON_ATTRS])) if _JSON_ATTRS in attrs else set()
    metadata: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == _JSON_ATTRS:
            continue
        if key in json_keys:
            metadata[key] = json.loads(value)
        elif isinstance(value, np.generic):
            metadata[key] = value.item()
        elif isinstance(value, bytes):
            metadata[key] = value.decode("utf-8", errors="replace")
        else:
            metadata[key] = value
    return metadata


# ------------------------------------------------------------------------ metadata


def capture_metadata(**extra: Any) -> dict[str, Any]:
    """Describe where and when data were taken: UTC time, host, user, versions, plus ``extra``.

    Keys: ``timestamp`` (ISO-8601 UTC with offset), ``hostname``, ``user``,
    ``platform``, ``python_version``, ``labd_version``, ``numpy_version``; ``extra``
    keys are added last and win over these.
    """
    metadata: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(),
        "hostname": socket.gethostname(),
        "user": _user_name(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "labd_version": __version__,
        "numpy_version": np.__version__,
    }
    metadata.update(extra)
    return metadata


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no USER variable, e.g. in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
