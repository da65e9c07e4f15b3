"""Synchronisation helpers shared by labd's tests: ``from helpers import wait_until``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last truth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def labd_threads(containing: str = "") -> list[threading.Thread]:
    """Live threads whose name starts with ``labd-`` (and contains ``containing``)."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("labd-") and containing in t.name and t.is_alive()
    ]


class Collector:
    """A stream subscriber that keeps what it gets and sets ``enough`` at ``n`` items."""

    def __init__(self, n: int = 5) -> None:
        self.items: list[Any] = []
        self.n = n
        self.enough = threading.Event()

    def __call__(self, datum: Any) -> None:
        self.items.append(datum)
        if len(self.items) >= self.n:
            self.enough.set()
