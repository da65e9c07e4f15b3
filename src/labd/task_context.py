"""The ``context`` a task's ``run(context)`` receives: its daemon, id, cancel and pause.

A leaf module, so that a remote context (:class:`labd.client.RemoteTaskContext`, for
task code run against a server) is the same class with the same methods.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TaskContext", "split_task_call", "task_call_signature"]


def split_task_call(
    args: tuple[Any, ...], params: dict[str, Any]
) -> tuple[Any, Any, dict[str, Any]]:
    """``execute_task``'s ``(task_id, task_type, params)`` from its positional and keyword args.

    Both ids may come by position or by keyword (LabDaemon's docs use keywords). Given by
    position, a keyword ``task_id=`` or ``task_type=`` belongs to the task itself (the id
    must then equal the task's id, as ``device_id=`` does for devices).
    """
    if len(args) > 2:
        raise TypeError(
            f"execute_task() takes task_id and task_type, then keyword parameters"
            f" ({len(args)} positional arguments given)"
        )
    values = list(args)
    params = dict(params)
    for name in ("task_id", "task_type")[len(args) :]:
        if name not in params:
            raise TypeError(f"execute_task() missing required argument: {name!r}")
        values.append(params.pop(name))
    return values[0], values[1], params


def task_call_signature(task_type: Any = "str | type") -> inspect.Signature:
    """The signature ``execute_task`` shows: ``(task_id, task_type, **params)``."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            inspect.Parameter("self", kind),
            inspect.Parameter("task_id", kind, annotation="str"),
            inspect.Parameter("task_type", kind, annotation=task_type),
            inspect.Parameter("params", inspect.Parameter.VAR_KEYWORD, annotation="Any"),
        ]
    )


class TaskContext:
    """What a running task gets: the daemon, its id, cancel/resume events and ``report``.

    Users may build one themselves to run a task's ``run()`` directly, e.g. against a
    remote daemon: ``task.run(TaskContext(api.daemon(), "sweep-1"))``.
    """

    def __init__(
        self,
        daemon: Any,
        task_id: str,
        *,
        cancel_event: threading.Event | None = None,
        resume_event: threading.Event | None = None,
        reporter: Callable[[float | None, str | None, dict[str, Any]], None] | None = None,
    ) -> None:
        self.daemon = daemon
        self.task_id = task_id
        self.cancel_event = cancel_event if cancel_event is not None else threading.Event()
        if resume_event is None:
            resume_event = threading.Event()
            resume_event.set()
        self.resume_event = resume_event
        self._reporter = reporter

    def report(
        self, progress: float | None = None, message: str | None = None, **data: Any
    ) -> None:
        """Publish progress (a fraction from 0.0 to 1.0), a message and any data."""
        if progress is not None:
            progress = float(progress)
            if not 0.0 <= progress <= 1.0:
                raise ValueError(f"progress must be between 0.0 and 1.0, got {progress}")
        if self._reporter is not None:
            self._reporter(progress, message, data)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def checkpoint(self, timeout: float | None = None) -> bool:
        """Wait while paused; return False when the task should stop (cancelled).

        ``timeout`` bounds the wait while paused; None waits until resumed or cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.resume_event.is_set() and not self.cancel_event.is_set():
            left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if left <= 0:
                break
            self.resume_event.wait(left)
        return not self.cancel_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless cancelled; returns False if the task was cancelled meanwhile."""
        return not self.cancel_event.wait(seconds)
