"""Small recipes for scripts that share a lab through a server.

``ensure_server`` answers "is a labd server up at this URL?" without side effects;
``ensure_device`` makes a device exist (and be connected) on a server, idempotently.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from labd.client import ServerAPI
from labd.exceptions import ServerAPIError
from labd.wire import DeviceInfo

__all__ = ["ensure_device", "ensure_server"]

log = logging.getLogger(__name__)


def ensure_server(server_url: str, timeout: float = 2.0) -> bool:
    """True iff ``GET /health`` answers 200 within ``timeout``; never raises, starts nothing."""
    url = server_url.rstrip("/") + "/health"
    try:
        response = httpx.get(url, timeout=timeout)
    except Exception as exc:  # any failure means "not there", as promised
        log.debug("no labd server at %s: %s", server_url, exc)
        return False
    return response.status_code == 200


def ensure_device(
    api: ServerAPI, device_id: str, device_type: str, connect: bool = True, **params: Any
) -> DeviceInfo:
    """Add the device if the server lacks it, connect it if asked; returns its info.

    An existing device is kept as it is (its parameters are not changed); a different
    ``device_type`` is logged as a warning.
    """
    try:
        info = api.get_device(device_id)
    except ServerAPIError as exc:
        if exc.status_code != 404:
            raise
        info = api.add_device(device_id, device_type, **params)
    else:
        if info["device_type"] not in (device_type, device_type.rpartition(":")[2]):
            log.warning(
                "device %r exists with type %r, not %r; keeping it",
                device_id,
                info["device_type"],
                device_type,
            )
    if connect and not info["connected"]:
        info = api.connect_device(device_id)
    return info
