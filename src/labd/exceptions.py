"""The exceptions labd raises, in one tree.

    LabDaemonException
    ├── DeviceError
    │   ├── DeviceConnectionError      connect() raised (the original is chained)
    │   ├── DeviceNotConnectedError
    │   ├── DeviceTimeoutError         a device call outlived its timeout
    │   │   └── DeviceBusy             an earlier call outlived its timeout and still runs
    │   ├── DeviceConfigurationError
    │   │   └── DeviceArgumentError    arguments do not fit the method (also TypeError)
    │   ├── DeviceOperationError
    │   │   └── ErrorBudgetExhausted   a stream gave up after N failures in a row
    │   └── DeviceOwnedError           a task holds the device
    ├── TaskError
    │   ├── TaskCancelledError         .result keeps what the task returned
    │   └── TaskFailedError            the task's exception is chained
    ├── ServerAPIError                 an HTTP error answer (.status_code, .error)
    │   ├── ServerConnectionError      the server could not be reached
    │   └── DeviceBusyError            409: the device is owned or busy
    ├── ConfigError                    a lab file that cannot be used (also ValueError)
    │   └── LabStartError              a valid lab file whose lab could not be brought up
    └── (lookup errors, also ValueError)
        ├── DuplicateDeviceError, UnknownDeviceError, UnknownDeviceTypeError
        ├── DuplicateTaskError, UnknownTaskError, UnknownTaskTypeError
        └── PluginConflictError

Lookup errors subclass ``ValueError`` too, so ``except ValueError`` code keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "DeviceArgumentError",
    "DeviceBusy",
    "DeviceBusyError",
    "DeviceConfigurationError",
    "DeviceConnectionError",
    "DeviceError",
    "DeviceNotConnectedError",
    "DeviceOperationError",
    "DeviceOwnedError",
    "DeviceTimeoutError",
    "DuplicateDeviceError",
    "DuplicateTaskError",
    "ErrorBudgetExhausted",
    "LabDaemonException",
    "LabStartError",
    "PluginConflictError",
    "ServerAPIError",
    "ServerConnectionError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "UnknownDeviceError",
    "UnknownDeviceTypeError",
    "UnknownTaskError",
    "UnknownTaskTypeError",
    "error_text",
]


def error_text(exc: BaseException) -> str:
    """``Type: message`` on one line (whitespace folded), or just ``Type`` without a message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LabDaemonException(Exception):
    """Base of every exception labd raises on purpose."""


class DeviceError(LabDaemonException):
    """Something went wrong with a device."""


class DeviceConnectionError(DeviceError):
    """A device's ``connect()`` raised; the original exception is chained."""


class DeviceNotConnectedError(DeviceError):
    """The device must be connected first."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """A device operation did not finish within its timeout."""


class DeviceConfigurationError(DeviceError):
    """The device's parameters are wrong."""


class DeviceArgumentError(DeviceConfigurationError, TypeError):
    """The arguments given to a device method do not fit its signature."""


class DeviceOperationError(DeviceError):
    """A device operation failed."""


class ErrorBudgetExhausted(DeviceOperationError):
    """A streaming loop stopped after too many consecutive failures; the last one is chained."""


class DeviceBusy(DeviceTimeoutError):
    """An earlier call to this device outlived its timeout and is still running."""


class DeviceOwnedError(DeviceError):
    """A task owns the device; ``owner`` names it."""

    def __init__(self, message: str, *, device_id: str = "", owner: str = "") -> None:
        super().__init__(message)
        self.device_id = device_id
        self.owner = owner


class TaskError(LabDaemonException):
    """Something went wrong with a task."""


class TaskCancelledError(TaskError):
    """The task was cancelled; ``result`` holds whatever it returned."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class TaskFailedError(TaskError):
    """The task raised; the original exception is chained as ``__cause__``."""


class _LookupProblem(LabDaemonException, ValueError):
    """An id or type name that is unknown or already taken."""


class PluginConflictError(_LookupProblem):
    """A type name is already registered for a different class."""


class UnknownDeviceTypeError(_LookupProblem):
    """No device type is registered under that name."""


class DuplicateDeviceError(_LookupProblem):
    """A device with that id already exists."""


class UnknownDeviceError(_LookupProblem):
    """No device has that id (or the object is not held by this daemon)."""


class DuplicateTaskError(_LookupProblem):
    """A task with that id is still running."""


class UnknownTaskTypeError(_LookupProblem):
    """No task type is registered under that name."""


class UnknownTaskError(_LookupProblem):
    """No task has that id."""


class ConfigError(LabDaemonException, ValueError):
    """A lab configuration that cannot be used; ``str()`` is one line: file, entry, problem."""

    exit_code = 2

    def __init__(self, path: str | Path, entry: str | None, problem: str) -> None:
        self.path = str(path)
        self.entry = entry
        self.problem = problem
        where = f"{self.path}: {entry}" if entry else self.path
        super().__init__(f"{where}: {problem}")


class LabStartError(ConfigError):
    """A valid configuration whose lab could not be brought up (a device failed to connect)."""

    exit_code = 1


class ServerAPIError(LabDaemonException):
    """The server answered with an error; ``error`` is the body's error object."""

    def __init__(
        self, message: str, *, status_code: int | None = None, error: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error or {}


class ServerConnectionError(ServerAPIError):
    """The server could not be reached."""


class DeviceBusyError(ServerAPIError):
    """The server answered 409: the device is owned by a task or busy with a hung call."""
