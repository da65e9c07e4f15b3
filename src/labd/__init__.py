"""labd: instrument control and experiment automation.

Write each instrument driver once as a plain class; use it from scripts, tasks, GUIs
and over the network. ``import labd as ld``.
"""

from labd._version import __version__
from labd.daemon import LabDaemon
from labd.datafiles import (
    LabDaemonJSONEncoder,
    capture_metadata,
    load_hdf5,
    load_json,
    save_hdf5,
    save_json,
)
from labd.devices import query
from labd.exceptions import (
    DeviceArgumentError,
    DeviceConfigurationError,
    DeviceConnectionError,
    DeviceError,
    DeviceNotConnectedError,
    DeviceOperationError,
    DeviceOwnedError,
    DeviceTimeoutError,
    LabDaemonException,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
)
from labd.recording import Recording, load_recording
from labd.streams import Subscription
from labd.tasks import TaskContext, TaskHandle

__all__ = [
    "DeviceArgumentError",
    "DeviceConfigurationError",
    "DeviceConnectionError",
    "DeviceError",
    "DeviceNotConnectedError",
    "DeviceOperationError",
    "DeviceOwnedError",
    "DeviceTimeoutError",
    "LabDaemon",
    "LabDaemonException",
    "LabDaemonJSONEncoder",
    "Recording",
    "Subscription",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskFailedError",
    "TaskHandle",
    "__version__",
    "capture_metadata",
    "load_hdf5",
    "load_json",
    "load_recording",
    "query",
    "save_hdf5",
    "save_json",
]
