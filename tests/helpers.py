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
    """A stream subscriber that keeps what it gets and sets ``enough`` at ``n`` items.

    Pass ``on_end=collector.on_end`` to also learn when the stream ends (``ended``).
    """

    def __init__(self, n: int = 5) -> None:
        self.items: list[Any] = []
        self.n = n
        self.enough = threading.Event()
        self.ended = threading.Event()
        self.end_error: BaseException | None = None

    def __call__(self, datum: Any) -> None:
        self.items.append(datum)
        if len(self.items) >= self.n:
            self.enough.set()

    def on_end(self, error: BaseException | None) -> None:
        self.end_error = error
        self.ended.set()
