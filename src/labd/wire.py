"""Wire formats shared by the core, the server and the clients.

One place defines how labd data look on the wire: JSON encoding (orjson, with the
conversion rules of :func:`labd.datafiles.json_default`), timestamps, the error object,
the info shapes of devices, methods and tasks, the stream envelope and SSE framing.
A future message bus carries the same envelope bytes that SSE frames wrap.
"""

from __future__ import annotations

import traceback as _traceback
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

# pydantic (the server's OpenAPI description) needs this TypedDict before Python 3.12.
from typing_extensions import TypedDict

from labd.datafiles import json_default

__all__ = [
    "FINAL_TASK_STATUSES",
    "ROLES",
    "CallResult",
    "DeviceInfo",
    "DeviceList",
    "ErrorBody",
    "ErrorInfo",
    "Health",
    "MethodInfo",
    "MethodList",
    "Origin",
    "ParameterInfo",
    "ParameterValue",
    "StartedTask",
    "StreamEnvelope",
    "TaskInfo",
    "TaskList",
    "TaskTypeInfo",
    "TaskTypeList",
    "decode_json",
    "encode_json",
    "encode_stream_envelope",
    "error_object",
    "format_timestamp",
    "parse_timestamp",
    "sse_comment",
    "sse_frame",
]

Origin = Literal["framework", "device", "callback", "task"]

#: The statuses a task ends in: after one of these it never changes again.
FINAL_TASK_STATUSES = frozenset({"completed", "failed", "cancelled"})

#: The roles a token may have, lowest first: each may do what the ones before it may.
ROLES = ("viewer", "operator", "admin")

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class ErrorInfo(TypedDict):
    """The error object: in every HTTP error body, error records and stream_error events."""

    type: str
    message: str
    origin: Origin
    timestamp: str
    traceback: str | None
    context: dict[str, Any]


class DeviceInfo(TypedDict):
    device_id: str
    device_type: str
    connected: bool
    streaming: bool
    owned_by: str | None
    last_error: ErrorInfo | None


class ParameterInfo(TypedDict):
    name: str
    kind: str
    required: bool
    default: Any
    annotation: str | None
    choices: list[Any] | None  # the allowed values of a Literal- or Enum-annotated parameter


class MethodInfo(TypedDict):
    name: str
    parameters: list[ParameterInfo]
    returns: str | None
    doc: str | None
    query: bool


class TaskInfo(TypedDict):
    task_id: str
    task_type: str
    device_ids: list[str]
    status: str
    running: bool
    paused: bool
    progress: float | None
    message: str | None
    result: Any
    exception: ErrorInfo | None
    started_at: str | None
    finished_at: str | None


class ErrorBody(TypedDict):
    """Every HTTP error answer."""

    error: ErrorInfo


class Health(TypedDict):
    status: str
    timestamp: str


class DeviceList(TypedDict):
    devices: list[DeviceInfo]


class MethodList(TypedDict):
    methods: list[MethodInfo]


class CallResult(TypedDict):
    result: Any
    success: bool


class TaskList(TypedDict):
    tasks: list[TaskInfo]


class StartedTask(TypedDict):
    task_id: str
    device_ids: list[str]
    status: str


class TaskTypeInfo(TypedDict):
    name: str
    parameters: list[ParameterInfo]
    doc: str | None


class TaskTypeList(TypedDict):
    task_types: list[TaskTypeInfo]


class ParameterValue(TypedDict):
    key: str
    value: Any


class StreamEnvelope(TypedDict):
    """One device datum on the wire (SSE ``device_data``, later a bus message)."""

    event: str
    device_id: str
    timestamp: str
    sequence: int
    run: int
    payload: Any


def encode_json(obj: Any, *, lenient: bool = False) -> bytes:
    """Encode to JSON bytes by labd's rules (NumPy → lists and numbers, datetimes → ISO-8601).

    With ``lenient=True`` values that have no JSON form become their ``repr`` instead of
    raising: for results and events that must be sent whatever a device returned.
    """
    try:
        return orjson.dumps(obj, default=json_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        if not lenient:
            raise
        return orjson.dumps(obj, default=_repr_default, option=_OPTIONS)


def _repr_default(obj: Any) -> Any:
    try:
        return json_default(obj)
    except (TypeError, ValueError):
        return repr(obj)


def decode_json(data: bytes | str) -> Any:
    """Decode JSON bytes or text."""
    return orjson.loads(data)


_second_prefix: tuple[int, str] = (-1, "")


def format_timestamp(ts: float) -> str:
    """POSIX seconds → RFC 3339 UTC with microseconds, e.g. ``2026-11-24T18:55:40.123456Z``.

    Called for every streamed datum, so the date part is formatted once per second.
    """
    global _second_prefix
    second = int(ts)
    micros = round((ts - second) * 1_000_000)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    if ts < 0 or micros < 0:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cached_second, prefix = _second_prefix
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_prefix = (second, prefix)
    return f"{prefix}{micros:06d}Z"


def parse_timestamp(text: str) -> float:
    """RFC 3339 / ISO-8601 with an offset (or ``Z``) → POSIX seconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment.timestamp()


def error_object(
    exc: BaseException,
    origin: Origin,
    context: dict[str, Any] | None = None,
    *,
    timestamp: float | None = None,
    include_traceback: bool = True,
) -> ErrorInfo:
    """Build the error object for ``exc``; the only place that shapes it."""
    import time

    text = None
    if include_traceback and exc.__traceback__ is not None:
        text = "".join(_traceback.format_exception(exc))
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "origin": origin,
        "timestamp": format_timestamp(time.time() if timestamp is None else timestamp),
        "traceback": text,
        "context": dict(context or {}),
    }


def encode_stream_envelope(
    device_id: str, sequence: int, timestamp: float, payload: Any, run: int
) -> bytes:
    """Encode one device datum as its JSON envelope.

    A payload that cannot be encoded becomes ``null`` with an ``encoding_error`` field, so
    one odd datum never breaks the stream for anyone.
    """
    envelope = {
        "event": "device_data",
        "device_id": device_id,
        "timestamp": format_timestamp(timestamp),
        "sequence": sequence,
        "run": run,
        "payload": payload,
    }
    try:
        return orjson.dumps(envelope, default=json_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        envelope["payload"] = None
        envelope["encoding_error"] = f"{type(payload).__name__}: {exc}"
        return orjson.dumps(envelope)


def sse_frame(event: str, data: bytes, event_id: int | str | None = None) -> bytes:
    """Frame one SSE event; ``data`` is a single line of JSON."""
    head = b"event: " + event.encode() + b"\ndata: "
    if event_id is not None:
        head = b"id: " + str(event_id).encode() + b"\n" + head
    return head + data + b"\n\n"


def sse_comment(text: str = "ping") -> bytes:
    """An SSE comment line, used as a heartbeat on idle streams."""
    return b": " + text.encode() + b"\n\n"
