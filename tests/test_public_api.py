"""labd's public namespace and exception tree match SPEC section 2."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import labd as ld
from labd import exceptions as exc

SPEC_NAMES = {
    "LabDaemon",
    "TaskContext",
    "TaskHandle",
    "Subscription",
    "query",
    "LabDaemonException",
    "DeviceError",
    "DeviceConnectionError",
    "DeviceNotConnectedError",
    "DeviceTimeoutError",
    "DeviceConfigurationError",
    "DeviceOperationError",
    "DeviceOwnedError",
    "TaskError",
    "TaskCancelledError",
    "TaskFailedError",
    "save_json",
    "load_json",
    "LabDaemonJSONEncoder",
    "save_hdf5",
    "load_hdf5",
    "capture_metadata",
    "Recording",  # section 3: daemon.record(...) -> Recording
    "load_recording",  # section 3
}

#: Names labd adds to SPEC's, each documented where it is used.
LABD_NAMES = {
    "DeviceArgumentError",  # docs/streaming.md: start_streaming arguments that do not fit
    "__version__",
}


def test_all_is_exactly_the_spec_names_and_the_documented_extras() -> None:
    assert set(ld.__all__) == SPEC_NAMES | LABD_NAMES, (
        sorted(SPEC_NAMES - set(ld.__all__)),
        sorted(set(ld.__all__) - SPEC_NAMES - LABD_NAMES),
    )


def test_every_name_in_all_exists() -> None:
    missing = [name for name in ld.__all__ if not hasattr(ld, name)]
    assert missing == []
    assert len(ld.__all__) == len(set(ld.__all__))


@pytest.mark.parametrize(
    "module",
    [
        "labd.exceptions",
        "labd.ring",
        "labd.events",
        "labd.streams",
        "labd.devices",
        "labd.tasks",
        "labd.daemon",
        "labd.wire",
    ],
)
def test_core_modules_have_honest_all(module: str) -> None:
    mod = __import__(module, fromlist=["__all__"])
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (exc.DeviceError, exc.LabDaemonException),
        (exc.DeviceConnectionError, exc.DeviceError),
        (exc.DeviceNotConnectedError, exc.DeviceError),
        (exc.DeviceTimeoutError, exc.DeviceError),
        (exc.DeviceConfigurationError, exc.DeviceError),
        (exc.DeviceOperationError, exc.DeviceError),
        (exc.DeviceOwnedError, exc.DeviceError),
        (exc.TaskError, exc.LabDaemonException),
        (exc.TaskCancelledError, exc.TaskError),
        (exc.TaskFailedError, exc.TaskError),
        (exc.ServerAPIError, exc.LabDaemonException),
        (exc.ServerConnectionError, exc.ServerAPIError),
        (exc.DeviceBusyError, exc.ServerAPIError),
        (exc.LabDaemonException, Exception),
    ],
)
def test_exception_tree(child: type, parent: type) -> None:
    assert issubclass(child, parent)


@pytest.mark.parametrize(
    "lookup",
    [
        exc.PluginConflictError,
        exc.UnknownDeviceTypeError,
        exc.DuplicateDeviceError,
        exc.UnknownDeviceError,
        exc.DuplicateTaskError,
        exc.UnknownTaskTypeError,
        exc.UnknownTaskError,
    ],
)
def test_lookup_errors_are_value_errors_too(lookup: type) -> None:
    assert issubclass(lookup, ValueError)
    assert issubclass(lookup, exc.LabDaemonException)
    assert not issubclass(lookup, exc.DeviceError | exc.TaskError)


def test_public_exceptions_are_the_same_objects() -> None:
    for name in exc.__all__:
        if hasattr(ld, name):
            assert getattr(ld, name) is getattr(exc, name)


def test_task_cancelled_error_keeps_result_and_owned_error_names_owner() -> None:
    assert exc.TaskCancelledError("x", result=[1]).result == [1]
    owned = exc.DeviceOwnedError("busy", device_id="a", owner="t")
    assert (owned.device_id, owned.owner) == ("a", "t")


def _params(func: object) -> list[tuple[str, str, object]]:
    sig = inspect.signature(func)  # type: ignore[arg-type]
    return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]


def test_lab_daemon_signatures_follow_spec() -> None:
    empty = inspect.Parameter.empty
    d = ld.LabDaemon
    assert _params(d.__init__)[1] == ("completed_task_buffer", "POSITIONAL_OR_KEYWORD", 20)
    assert _params(d.add_device)[1:] == [
        ("device_id", "POSITIONAL_ONLY", empty),
        ("device_type", "POSITIONAL_ONLY", empty),
        ("params", "VAR_KEYWORD", empty),
    ]
    assert [p[0] for p in _params(d.execute_task)[1:]] == ["task_id", "task_type", "params"]
    for name in ("remove_device", "connect_device", "disconnect_device"):
        assert _params(getattr(d, name))[-1] == ("timeout", "POSITIONAL_OR_KEYWORD", None)
    assert _params(d.stop_streaming)[-1] == ("timeout", "POSITIONAL_OR_KEYWORD", 1.0)
    assert _params(d.shutdown)[-1] == ("timeout", "POSITIONAL_OR_KEYWORD", 2.0)
    for name in (
        "register_plugins",
        "get_device",
        "list_devices",
        "device_context",
        "task_context",
        "get_task",
        "list_tasks",
        "start_streaming",
        "get_last_error",
        "clear_last_error",
    ):
        assert callable(getattr(d, name)), name


def test_task_handle_and_subscription_surface() -> None:
    for name in (
        "wait",
        "cancel",
        "is_running",
        "exception",
        "pause",
        "resume",
        "is_paused",
        "set_parameter",
        "get_parameter",
        "status",
    ):
        assert hasattr(ld.TaskHandle, name), name
    for name in ("close", "dropped", "delivered"):
        assert hasattr(ld.Subscription, name), name
    for name in ("report",):
        assert hasattr(ld.TaskContext, name)


def test_importing_labd_does_not_import_the_server_or_its_framework() -> None:
    code = (
        "import sys, labd; "
        "mods = ('labd.server', 'fastapi', 'uvicorn', 'starlette'); "
        "bad = [m for m in mods if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
