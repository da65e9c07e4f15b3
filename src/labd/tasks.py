"""Tasks: experiment code run on its own thread, with cancel, pause, resume and live parameters.

A task is any class with ``run(self, context)``. labd runs it on a thread named
``labd-task-<id>`` and hands out a :class:`TaskHandle`. Status lives in one place,
with its allowed transitions in ``TRANSITIONS``; every change publishes ``task_status``
(and, at the end, ``task_finished``).

* ``cancel()`` asks the task to stop: it sets ``context.cancel_event`` and wakes a
  paused task. A task that then returns normally is ``cancelled`` and keeps what it
  returned as the partial result.
* ``pause()``/``resume()`` clear and set ``context.resume_event``; the task waits on it
  at its own checkpoints (``context.checkpoint()`` does both waits in one call).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from labd.exceptions import TaskCancelledError, TaskError, TaskFailedError, error_text
from labd.ring import EventRing, RingEvent
from labd.task_context import TaskContext
from labd.wire import (
    FINAL_TASK_STATUSES,
    ErrorInfo,
    TaskInfo,
    encode_json,
    error_object,
    format_timestamp,
    sse_frame,
)

__all__ = ["FINAL_STATUSES", "TRANSITIONS", "TaskContext", "TaskHandle", "current_task"]

log = logging.getLogger(__name__)

#: Allowed status transitions; :meth:`TaskHandle._set_status` raises TaskError for others.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running"}),
    "running": frozenset({"paused", "completed", "failed", "cancelled"}),
    "paused": frozenset({"running", "completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
FINAL_STATUSES = FINAL_TASK_STATUSES

_current = threading.local()


def current_task() -> TaskHandle | None:
    """The task whose thread is calling, if any (used to link child tasks to parents)."""
    return getattr(_current, "handle", None)


class TaskHandle:
    """Control and observe one running (or finished) task."""

    def __init__(
        self,
        daemon: Any,  # the LabDaemon running it (typed loosely: the daemon imports this)
        task_id: str,
        task_type: str,
        task: Any,
        device_ids: list[str],
        parent: TaskHandle | None,
        publish: Callable[..., Any],
        on_finished: Callable[[TaskHandle], None],
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.device_ids = list(device_ids)
        self.task = task
        self.parent = parent
        self.children: list[TaskHandle] = []
        self.result: Any = None
        self.progress: float | None = None
        self.message: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.events = EventRing(capacity=512, max_bytes=4 * 1024 * 1024)
        self._status = "pending"
        self._exception: BaseException | None = None
        #: The error object of what ``run()`` raised, made once when it finished.
        self.error: ErrorInfo | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._publish = publish
        self._on_finished = on_finished
        self.context = TaskContext(daemon, task_id, reporter=self._report)
        self._thread = threading.Thread(target=self._run, name=f"labd-task-{task_id}", daemon=True)

    # -- status ---------------------------------------------------------------------

    @property
    def status(self) -> str:
        """One of ``running``, ``paused``, ``completed``, ``failed``, ``cancelled``."""
        return "running" if self._status == "pending" else self._status

    def _set_status(self, new: str) -> None:
        """Change the status by :data:`TRANSITIONS` and publish ``task_status`` once.

        Setting the current status again changes nothing (a second ``pause()``); any
        change the table does not allow raises TaskError naming both statuses.
        """
        with self._lock:
            old = self._status
            if new == old:
                return
            if new not in TRANSITIONS[old]:
                raise TaskError(f"task {self.task_id!r} is {self.status}; it cannot become {new}")
            self._status = new
        body = {"task_id": self.task_id, "status": new}
        self._append("task_status", body)
        self._publish("task_status", **body)

    def _append(self, event: str, body: dict[str, Any]) -> None:
        now = time.time()
        frame = sse_frame(event, encode_json({"event": event, **body}, lenient=True))
        self.events.append(RingEvent(event, frame, timestamp=now))

    def is_running(self) -> bool:
        return not self._done.is_set()

    def is_paused(self) -> bool:
        return self._status == "paused"

    def exception(self) -> BaseException | None:
        """The exception ``run()`` raised, or None."""
        return self._exception

    @property
    def cancel_requested(self) -> bool:
        return self.context.cancel_event.is_set()

    # -- control ----------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the task (and the child tasks it started) to stop; idempotent."""
        if self._done.is_set():
            return
        self.context.cancel_event.set()
        self.context.resume_event.set()
        if self._status == "paused":
            try:
                self._set_status("running")
            except TaskError:  # it finished meanwhile: nothing left to wake
                pass
        for child in list(self.children):
            child.cancel()

    def pause(self) -> None:
        """Ask the task to pause at its next checkpoint."""
        if self._done.is_set() or self.cancel_requested:
            raise TaskError(f"task {self.task_id!r} is not running ({self.status})")
        self.context.resume_event.clear()
        self._set_status("paused")

    def resume(self) -> None:
        """Let a paused task go on."""
        if self._done.is_set():
            raise TaskError(f"task {self.task_id!r} is not running ({self.status})")
        self.context.resume_event.set()
        self._set_status("running")

    def set_parameter(self, key: str, value: Any) -> None:
        """Change a live parameter through the task's own ``set_parameter``."""
        setter = getattr(self.task, "set_parameter", None)
        if not callable(setter):
            raise TaskError(f"task {self.task_id!r} ({self.task_type}) has no set_parameter")
        setter(key, value)

    def get_parameter(self, key: str) -> Any:
        getter = getattr(self.task, "get_parameter", None)
        if not callable(getter):
            raise TaskError(f"task {self.task_id!r} ({self.task_type}) has no get_parameter")
        return getter(key)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the end and return the result.

        Raises TaskFailedError (cause chained), TaskCancelledError or TimeoutError.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"task {self.task_id!r} still running after {timeout} s")
        if self._status == "failed" and self._exception is not None:
            raise TaskFailedError(
                f"task {self.task_id!r} failed: {error_text(self._exception)}"
            ) from self._exception
        if self._status == "cancelled":
            raise TaskCancelledError(f"task {self.task_id!r} was cancelled", result=self.result)
        return self.result

    # -- running ----------------------------------------------------------------------

    def _start(self) -> None:
        self.started_at = time.time()
        self._set_status("running")
        self._thread.start()

    def _report(self, progress: float | None, message: str | None, data: dict[str, Any]) -> None:
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message
        body = {"task_id": self.task_id, "progress": progress, "message": message, "data": data}
        self._append("task_progress", body)
        self._publish("task_progress", **body)

    def _run(self) -> None:
        _current.handle = self
        final = "completed"
        try:
            self.result = self.task.run(self.context)
            if self.cancel_requested:
                final = "cancelled"
        except TaskCancelledError as exc:
            self._exception = exc
            self.result = exc.result
            final = "cancelled"
        except BaseException as exc:
            self._exception = exc
            final = "failed"
            log.warning("task %r failed: %s: %s", self.task_id, type(exc).__name__, exc)
        finally:
            _current.handle = None
            self.finished_at = time.time()
            if final == "completed" and self.progress is not None:
                self.progress = 1.0
            if self._exception is not None:  # made once: every reader sees the same object
                context = {"task_id": self.task_id, "task_type": self.task_type}
                self.error = error_object(self._exception, "task", context)
            self._on_finished(self)
            self._set_status(final)
            self._publish(
                "task_finished",
                task_id=self.task_id,
                status=final,
                result=self.result,
                error=self.error if final == "failed" else None,
            )
            self._done.set()

    def join_thread(self, timeout: float | None) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def info(self) -> TaskInfo:
        """The task's info as sent over the wire."""
        return {
            "task_id": self.task_id,
            "task_type": self.task_type,
            "device_ids": list(self.device_ids),
            "status": self.status,
            "running": self.is_running(),
            "paused": self.is_paused(),
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "exception": self.error,
            "started_at": format_timestamp(self.started_at) if self.started_at else None,
            "finished_at": format_timestamp(self.finished_at) if self.finished_at else None,
        }

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_id!r} {self.task_type} {self.status}>"
