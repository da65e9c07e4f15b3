"""labd's HTTP/SSE server and its Python clients.

``LabDaemonServer`` needs the ``labd[server]`` extra; the clients (``ServerAPI``,
``SSEClient`` and their errors) need only the base install, and importing them from
here never imports the server's framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labd.client import ServerAPI, SSEClient
from labd.exceptions import DeviceBusyError, ServerAPIError, ServerConnectionError

if TYPE_CHECKING:
    from labd.server._server import LabDaemonServer

__all__ = [
    "DeviceBusyError",
    "LabDaemonServer",
    "SSEClient",
    "ServerAPI",
    "ServerAPIError",
    "ServerConnectionError",
]


def __getattr__(name: str) -> Any:
    if name == "LabDaemonServer":
        from labd.server._server import LabDaemonServer

        return LabDaemonServer
    raise AttributeError(f"module 'labd.server' has no attribute {name!r}")
