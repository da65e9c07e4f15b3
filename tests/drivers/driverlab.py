"""The driver tests' lab: a daemon knowing every idiom type, served on a loopback port."""

from __future__ import annotations

from typing import Any

import httpx
from idioms import ALL

from labd import LabDaemon
from labd.server import LabDaemonServer, ServerAPI

TIMEOUT = 20.0


class Lab:
    """A daemon knowing every idiom type, its server, an httpx client and a ServerAPI."""

    def __init__(self) -> None:
        self.daemon = LabDaemon()
        self.daemon.register_plugins(devices=ALL)
        self.server = LabDaemonServer(self.daemon, port=0, heartbeat_interval=0.5)
        self.server.start()
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT)
        self.api = ServerAPI(self.url, timeout=TIMEOUT)

    def add(self, device_id: str, device_type: str, **params: Any) -> Any:
        """Add (and connect) a device in-process; returns the device object."""
        device = self.daemon.add_device(device_id, device_type, **params)
        self.daemon.connect_device(device_id)
        return device

    def close(self) -> None:
        self.api.close()
        self.http.close()
        self.server.stop()
        self.daemon.shutdown(timeout=10.0)
