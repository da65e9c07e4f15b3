"""Fixtures shared by every labd test module.

* ``daemon``: a fresh :class:`labd.LabDaemon`, shut down after the test.
* An autouse check that fails a test leaving ``labd-`` threads alive after teardown.
  A test that hangs a device call on purpose whitelists its ``labd-call-*`` thread with
  ``@pytest.mark.allow_threads("labd-call-hung")`` or the ``allow_threads`` fixture
  (``allow_threads("labd-call-hung")``); names match exactly or as a ``*`` prefix.

``wait_until`` lives in ``tests/helpers.py`` (``from helpers import wait_until``) and is
re-exported here for modules that prefer ``from conftest import wait_until``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from helpers import labd_threads, wait_until
from labd import LabDaemon

__all__ = ["labd_threads", "wait_until"]

THREAD_EXIT_GRACE = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_threads(*names): labd thread names (or 'prefix*') this test may leave alive",
    )


def _allowed(name: str, patterns: set[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
        if name == pattern:
            return True
    return False


@pytest.fixture
def allow_threads(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Whitelist thread names (exact, or ``prefix*``) for the leak check of this test."""
    patterns: set[str] = request.node.stash.setdefault(_ALLOWED_KEY, set())

    def allow(*names: str) -> None:
        patterns.update(names)

    return allow


_ALLOWED_KEY = pytest.StashKey[set[str]]()


@pytest.fixture(autouse=True)
def _no_labd_threads_left(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(threading.enumerate())
    patterns: set[str] = request.node.stash.setdefault(_ALLOWED_KEY, set())
    for marker in request.node.iter_markers("allow_threads"):
        patterns.update(marker.args)
    yield

    def leaked() -> list[threading.Thread]:
        return [t for t in labd_threads() if t not in before and not _allowed(t.name, patterns)]

    if not wait_until(lambda: not leaked(), timeout=THREAD_EXIT_GRACE):
        names = sorted(t.name for t in leaked())
        pytest.fail(f"labd threads still alive after the test: {names}", pytrace=False)


@pytest.fixture
def daemon() -> Iterator[LabDaemon]:
    """A LabDaemon that is shut down after the test."""
    d = LabDaemon()
    try:
        yield d
    finally:
        d.shutdown(timeout=10.0)
