"""Python clients for a labd server: HTTP calls, SSE streams and remote proxies.

``ServerAPI`` wraps the HTTP API; ``SSEClient`` follows device, task and event streams;
``ServerAPI.device()`` and ``ServerAPI.daemon()`` give proxies on which local code runs
unchanged. Only httpx is needed: nothing here imports the server's framework.
"""

from labd.client._api import ServerAPI
from labd.client._remote import (
    RemoteDaemon,
    RemoteDevice,
    RemoteMethod,
    RemoteSubscription,
    RemoteTaskContext,
    RemoteTaskHandle,
)
from labd.client._sse import Backoff, EventStream, SSEClient, SSEEvent, SSEParser
from labd.exceptions import DeviceBusyError, ServerAPIError, ServerConnectionError

__all__ = [
    "Backoff",
    "DeviceBusyError",
    "EventStream",
    "RemoteDaemon",
    "RemoteDevice",
    "RemoteMethod",
    "RemoteSubscription",
    "RemoteTaskContext",
    "RemoteTaskHandle",
    "SSEClient",
    "SSEEvent",
    "SSEParser",
    "ServerAPI",
    "ServerAPIError",
    "ServerConnectionError",
]
