"""Tasks: status, results and errors, cancel/pause/resume, parameters, children, ownership,
retention and progress events (SPEC section 2)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

import labd as ld
from helpers import wait_until
from labd.exceptions import DuplicateTaskError, UnknownTaskError, UnknownTaskTypeError
from labd.tasks import TRANSITIONS


class Returns:
    def __init__(self, value: Any = 42) -> None:
        self.value = value

    def run(self, context: ld.TaskContext) -> Any:
        return self.value


class Raises:
    def run(self, context: ld.TaskContext) -> None:
        raise KeyError("missing setting")


class UntilCancelled:
    """Counts steps until cancelled; returns the count (a partial result)."""

    def __init__(self, device_ids: list[str] | None = None) -> None:
        self.device_ids = device_ids or []
        self.started = threading.Event()
        self.steps = 0

    def run(self, context: ld.TaskContext) -> int:
        self.started.set()
        while not context.cancel_event.wait(0.001):
            self.steps += 1
        return self.steps


class Gate:
    """Waits on a release event (or cancel)."""

    def __init__(self, device_ids: list[str] | None = None) -> None:
        self.device_ids = device_ids or []
        self.release = threading.Event()
        self.started = threading.Event()

    def run(self, context: ld.TaskContext) -> str:
        self.started.set()
        while not self.release.is_set() and not context.cancel_event.is_set():
            self.release.wait(0.01)
        return "released"


class Device:
    def read(self) -> int:
        return 1


def listen(daemon: ld.LabDaemon) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    daemon.events.add_listener(events.append)
    return events


# -- results and status ---------------------------------------------------------------------


def test_completed_task_result_and_status(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Returns, value={"x": 1})
    assert handle.wait(10) == {"x": 1}
    assert handle.status == "completed"
    assert handle.result == {"x": 1}
    assert handle.exception() is None
    assert not handle.is_running()
    assert (handle.task_id, handle.task_type, handle.device_ids) == ("t", "Returns", [])


def test_task_thread_is_named(daemon: ld.LabDaemon) -> None:
    class Who:
        def run(self, context: ld.TaskContext) -> tuple[str, bool]:
            t = threading.current_thread()
            return t.name, t.daemon

    assert daemon.execute_task("who", Who).wait(10) == ("labd-task-who", True)


def test_failed_task_raises_task_failed_error_chained(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Raises)
    with pytest.raises(ld.TaskFailedError, match="'t'") as info:
        handle.wait(10)
    assert isinstance(info.value.__cause__, KeyError)
    assert handle.status == "failed"
    assert isinstance(handle.exception(), KeyError)
    error = daemon.get_task_error("t")
    assert error is not None
    assert (error["type"], error["origin"]) == ("KeyError", "task")
    assert error["context"]["task_id"] == "t"
    daemon.clear_task_error("t")
    assert daemon.get_task_error("t") is None


def test_wait_times_out_with_timeout_error(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Gate)
    with pytest.raises(TimeoutError):
        handle.wait(0.05)
    assert handle.status == "running" and handle.is_running()
    handle.task.release.set()
    assert handle.wait(10) == "released"


def test_cancelled_task_keeps_partial_result(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", UntilCancelled)
    assert handle.task.started.wait(10)
    assert wait_until(lambda: handle.task.steps > 2)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError) as info:
        handle.wait(10)
    assert handle.status == "cancelled"
    assert info.value.result == handle.result == handle.task.steps
    assert info.value.result > 2
    assert handle.exception() is None


def test_task_raising_task_cancelled_error_is_cancelled(daemon: ld.LabDaemon) -> None:
    class GivesUp:
        def run(self, context: ld.TaskContext) -> None:
            raise ld.TaskCancelledError("stopped early", result=[1, 2])

    handle = daemon.execute_task("t", GivesUp)
    with pytest.raises(ld.TaskCancelledError) as info:
        handle.wait(10)
    assert handle.status == "cancelled"
    assert info.value.result == [1, 2]


def test_cancel_is_idempotent_and_does_not_change_a_finished_task(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Returns)
    assert handle.wait(10) == 42
    handle.cancel()
    handle.cancel()
    assert handle.status == "completed"
    assert handle.result == 42
    assert handle.wait(1) == 42
    failed = daemon.execute_task("f", Raises)
    with pytest.raises(ld.TaskFailedError):
        failed.wait(10)
    failed.cancel()
    assert failed.status == "failed"


def test_status_table_has_the_spec_statuses() -> None:
    assert {"running", "paused", "completed", "failed", "cancelled"} <= set(TRANSITIONS)
    for final in ("completed", "failed", "cancelled"):
        assert TRANSITIONS[final] == frozenset()


def test_a_status_change_the_table_refuses_raises_and_publishes_nothing(
    daemon: ld.LabDaemon,
) -> None:
    handle = daemon.execute_task("done", Returns)
    handle.wait(10)
    seen = len(handle.events.snapshot())
    for new in ("running", "paused", "failed"):
        with pytest.raises(ld.TaskError, match="'done' is completed; it cannot become"):
            handle._set_status(new)
    assert handle.status == "completed" and len(handle.events.snapshot()) == seen
    with pytest.raises(ld.TaskError, match="not running"):
        handle.pause()
    handle.cancel()  # idempotent on a finished task
    assert handle.status == "completed"


def test_task_id_injection_and_bad_params(daemon: ld.LabDaemon) -> None:
    class Named:
        def __init__(self, task_id: str, n: int = 1) -> None:
            self.seen = task_id
            self.n = n

        def run(self, context: ld.TaskContext) -> tuple[str, str, int]:
            return self.seen, context.task_id, self.n

    assert daemon.execute_task("n1", Named, n=3).wait(10) == ("n1", "n1", 3)
    assert daemon.execute_task("n2", Named, task_id="n2").wait(10) == ("n2", "n2", 1)
    assert daemon.execute_task("r", Returns).task.task_id == "r"
    with pytest.raises(ld.TaskError, match="'n3'"):
        daemon.execute_task("n3", Named, bogus=1)
    with pytest.raises(ld.TaskError, match="'n4'"):
        daemon.execute_task("n4", Named, task_id="other")
    assert "n3" not in daemon.list_tasks()


# -- ids and types ----------------------------------------------------------------------------


def test_unknown_task_type_and_id(daemon: ld.LabDaemon) -> None:
    with pytest.raises(UnknownTaskTypeError) as info:
        daemon.execute_task("t", "no-such-task")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ld.LabDaemonException)
    assert "'no-such-task'" in str(info.value)
    with pytest.raises(UnknownTaskError) as info2:
        daemon.get_task("ghost")
    assert isinstance(info2.value, ValueError) and "'ghost'" in str(info2.value)


def test_registered_task_type_by_name(daemon: ld.LabDaemon) -> None:
    daemon.register_plugins(tasks={"returns": Returns})
    handle = daemon.execute_task("t", "returns", value=7)
    assert handle.wait(10) == 7
    assert handle.task_type == "returns"


def test_duplicate_running_id_refused_finished_id_reusable_at_once(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Gate)
    with pytest.raises(DuplicateTaskError) as info:
        daemon.execute_task("t", Returns)
    assert isinstance(info.value, ValueError) and "'t'" in str(info.value)
    handle.task.release.set()
    handle.wait(10)
    again = daemon.execute_task("t", Returns, value=2)
    assert again is not handle
    assert again.wait(10) == 2
    assert daemon.get_task("t") is again
    assert daemon.list_tasks() == ["t"]


# -- pause / resume -----------------------------------------------------------------------------


class Stepper:
    def __init__(self) -> None:
        self.steps = 0
        self.at_gate = threading.Event()

    def run(self, context: ld.TaskContext) -> int:
        while not context.cancel_event.is_set():
            if not context.resume_event.is_set():
                self.at_gate.set()
            if not context.checkpoint():
                break
            self.steps += 1
            context.sleep(0.001)
        return self.steps


def test_pause_stops_progress_and_resume_restarts_it(daemon: ld.LabDaemon) -> None:
    events = listen(daemon)
    handle = daemon.execute_task("t", Stepper)
    task = handle.task
    assert wait_until(lambda: task.steps > 3)
    handle.pause()
    assert handle.status == "paused" and handle.is_paused() and handle.is_running()
    assert task.at_gate.wait(10)
    frozen = task.steps
    time.sleep(0.2)  # an observation window: a paused task must not step at all
    assert task.steps == frozen
    handle.resume()
    assert handle.status == "running" and not handle.is_paused()
    assert wait_until(lambda: task.steps > frozen + 3)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(10)
    statuses = [e["status"] for e in events if e["event"] == "task_status"]
    assert statuses == ["running", "paused", "running", "cancelled"]


def test_cancel_wakes_a_paused_task(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Stepper)
    assert wait_until(lambda: handle.task.steps > 0)
    handle.pause()
    assert handle.task.at_gate.wait(10)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(10)
    assert handle.status == "cancelled"


def test_pause_or_resume_of_a_finished_task_is_an_error(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Returns)
    handle.wait(10)
    with pytest.raises(ld.TaskError):
        handle.pause()
    with pytest.raises(ld.TaskError):
        handle.resume()
    assert handle.status == "completed"


# -- live parameters ----------------------------------------------------------------------------


class Tunable(Gate):
    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, float] = {"gain": 1.0}

    def set_parameter(self, key: str, value: Any) -> None:
        if key not in self.params:
            raise KeyError(key)
        if not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number")
        self.params[key] = float(value)

    def get_parameter(self, key: str) -> float:
        return self.params[key]


def test_set_and_get_parameter(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Tunable)
    try:
        handle.set_parameter("gain", 2)
        assert handle.get_parameter("gain") == 2.0
        with pytest.raises(KeyError):
            handle.set_parameter("nope", 1)
        with pytest.raises(KeyError):
            handle.get_parameter("nope")
        with pytest.raises(ValueError):
            handle.set_parameter("gain", "loud")
    finally:
        handle.task.release.set()
    handle.wait(10)


def test_parameters_unsupported_is_task_error(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("t", Gate)
    try:
        with pytest.raises(ld.TaskError, match="'t'"):
            handle.set_parameter("gain", 1)
        with pytest.raises(ld.TaskError, match="'t'"):
            handle.get_parameter("gain")
    finally:
        handle.task.release.set()
    handle.wait(10)


# -- children ---------------------------------------------------------------------------------


class Parent:
    def __init__(self, child_devices: list[str] | None = None, device_ids: Any = None) -> None:
        self.device_ids = device_ids or []
        self.child_devices = child_devices or []
        self.child: ld.TaskHandle | None = None
        self.ready = threading.Event()

    def run(self, context: ld.TaskContext) -> str:
        self.child = context.daemon.execute_task(
            f"{context.task_id}-child", UntilCancelled, device_ids=self.child_devices
        )
        self.ready.set()
        context.cancel_event.wait(30)
        return "parent done"


def test_cancelling_a_parent_cancels_its_children(daemon: ld.LabDaemon) -> None:
    handle = daemon.execute_task("p", Parent)
    assert handle.task.ready.wait(10)
    child = handle.task.child
    assert child is not None and child.task.started.wait(10)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(10)
    with pytest.raises(ld.TaskCancelledError):
        child.wait(10)
    assert child.status == "cancelled"


def test_child_started_after_parent_cancel_is_cancelled_too(daemon: ld.LabDaemon) -> None:
    class LateParent:
        def __init__(self) -> None:
            self.child: ld.TaskHandle | None = None

        def run(self, context: ld.TaskContext) -> None:
            context.cancel_event.wait(30)
            self.child = context.daemon.execute_task("late-child", UntilCancelled)

    handle = daemon.execute_task("p", LateParent)
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(10)
    child = handle.task.child
    assert child is not None
    with pytest.raises(ld.TaskCancelledError):
        child.wait(10)


def test_children_may_use_their_ancestors_devices(daemon: ld.LabDaemon) -> None:
    daemon.add_device("a", Device)
    daemon.add_device("b", Device)
    handle = daemon.execute_task("p", Parent, device_ids=["a"], child_devices=["a", "b"])
    assert handle.task.ready.wait(10)
    child = handle.task.child
    assert child is not None
    assert daemon.owner_of("a") == "p"
    assert daemon.owner_of("b") == "p-child"
    assert daemon.device_info("a")["owned_by"] == "p"
    with pytest.raises(ld.DeviceOwnedError):
        daemon.execute_task("stranger", UntilCancelled, device_ids=["a"])
    child.cancel()
    with pytest.raises(ld.TaskCancelledError):
        child.wait(10)
    assert daemon.owner_of("a") == "p"  # the child's end does not release the parent's claim
    assert daemon.owner_of("b") is None
    handle.cancel()
    with pytest.raises(ld.TaskCancelledError):
        handle.wait(10)
    assert daemon.owner_of("a") is None


# -- ownership ----------------------------------------------------------------------------------


def test_claims_are_all_or_none_and_name_the_owner(daemon: ld.LabDaemon) -> None:
    for name in ("a", "b"):
        daemon.add_device(name, Device)
    holder = daemon.execute_task("holder", Gate, device_ids=["b"])
    with pytest.raises(ld.DeviceOwnedError) as info:
        daemon.execute_task("greedy", Gate, device_ids=["a", "b"])
    assert isinstance(info.value, ld.DeviceError)
    assert "'holder'" in str(info.value) and "'b'" in str(info.value)
    assert (info.value.owner, info.value.device_id) == ("holder", "b")
    assert daemon.owner_of("a") is None
    assert daemon.owner_of("b") == "holder"
    assert "greedy" not in daemon.list_tasks()
    holder.task.release.set()
    holder.wait(10)


def test_unknown_device_in_claims_is_an_error(daemon: ld.LabDaemon) -> None:
    from labd.exceptions import UnknownDeviceError

    with pytest.raises(UnknownDeviceError, match="'ghost'"):
        daemon.execute_task("t", Gate, device_ids=["ghost"])


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_claims_released_however_the_task_ends(daemon: ld.LabDaemon, ending: str) -> None:
    class Claims:
        device_ids = ["a", "b"]

        def __init__(self) -> None:
            self.go = threading.Event()

        def run(self, context: ld.TaskContext) -> None:
            while not self.go.wait(0.01):
                if context.cancel_event.is_set():
                    return
            if ending == "failed":
                raise RuntimeError("failed on purpose")

    daemon.add_device("a", Device)
    daemon.add_device("b", Device)
    handle = daemon.execute_task("t", Claims)
    assert daemon.owner_of("a") == daemon.owner_of("b") == "t"
    if ending == "cancelled":
        handle.cancel()
    else:
        handle.task.go.set()
    with pytest.raises(Exception) if ending != "completed" else _no_raise():
        handle.wait(10)
    assert handle.status == ending
    assert daemon.owner_of("a") is None and daemon.owner_of("b") is None
    daemon.execute_task("next", Returns).wait(10)
    assert daemon.execute_task("again", Claims) is not None
    daemon.get_task("again").cancel()
    with pytest.raises(ld.TaskCancelledError):
        daemon.get_task("again").wait(10)


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


# -- retention ----------------------------------------------------------------------------------


def test_completed_tasks_beyond_the_buffer_are_forgotten_lru() -> None:
    daemon = ld.LabDaemon(completed_task_buffer=3)
    try:
        for i in range(3):
            daemon.execute_task(f"t{i}", Returns).wait(10)
        assert daemon.list_tasks() == ["t0", "t1", "t2"]
        daemon.get_task("t0")  # refreshes t0
        daemon.execute_task("t3", Returns).wait(10)
        assert sorted(daemon.list_tasks()) == ["t0", "t2", "t3"]
        with pytest.raises(UnknownTaskError):
            daemon.get_task("t1")
    finally:
        daemon.shutdown(10)


def test_running_tasks_are_never_forgotten() -> None:
    daemon = ld.LabDaemon(completed_task_buffer=1)
    try:
        long = daemon.execute_task("long", Gate)
        for i in range(4):
            daemon.execute_task(f"q{i}", Returns).wait(10)
        assert sorted(daemon.list_tasks()) == ["long", "q3"]
        long.task.release.set()
        long.wait(10)
        # The task that just finished is the most recently used one.
        assert daemon.list_tasks() == ["long"]
        assert daemon.get_task("long") is long
    finally:
        daemon.shutdown(10)


def test_zero_buffer_forgets_finished_tasks_but_handles_still_work() -> None:
    daemon = ld.LabDaemon(completed_task_buffer=0)
    try:
        handle = daemon.execute_task("t", Returns)
        assert handle.wait(10) == 42
        assert daemon.list_tasks() == []
    finally:
        daemon.shutdown(10)


def test_failed_task_error_record_follows_retention() -> None:
    daemon = ld.LabDaemon(completed_task_buffer=1)
    try:
        with pytest.raises(ld.TaskFailedError):
            daemon.execute_task("bad", Raises).wait(10)
        assert daemon.get_task_error("bad") is not None
        daemon.execute_task("ok", Returns).wait(10)
        with pytest.raises(UnknownTaskError):
            daemon.get_task_error("bad")
    finally:
        daemon.shutdown(10)


# -- progress and events ------------------------------------------------------------------------


class Reporter:
    def run(self, context: ld.TaskContext) -> str:
        context.report(0.25, "quarter", step=1)
        context.report(message="no progress number")
        context.report(progress=0.5)
        return "done"


def frames(handle: ld.TaskHandle) -> list[dict[str, Any]]:
    out = []
    for event in handle.events.snapshot():
        text = event.frame.decode()
        (data,) = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert f"event: {event.kind}" in text
        out.append(json.loads(data))
    return out


def test_report_publishes_progress_events(daemon: ld.LabDaemon) -> None:
    events = listen(daemon)
    handle = daemon.execute_task("t", Reporter)
    assert handle.wait(10) == "done"
    progress = [e for e in events if e["event"] == "task_progress"]
    assert [(e["progress"], e["message"], e["data"]) for e in progress] == [
        (0.25, "quarter", {"step": 1}),
        (None, "no progress number", {}),
        (0.5, None, {}),
    ]
    assert all(e["task_id"] == "t" and e["timestamp"].endswith("Z") for e in progress)
    assert handle.progress == 1.0
    assert handle.message == "no progress number"
    names = [e["event"] for e in events if e.get("task_id") == "t"]
    assert names[0] == "task_started"
    assert names[-1] == "task_finished"
    finished = events[-1]
    assert (finished["status"], finished["result"]) == ("completed", "done")
    assert finished["error"] is None

    ring = frames(handle)
    assert [(f["event"], f.get("status"), f.get("progress")) for f in ring] == [
        ("task_status", "running", None),
        ("task_progress", None, 0.25),
        ("task_progress", None, None),
        ("task_progress", None, 0.5),
        ("task_status", "completed", None),
    ]


def test_task_finished_event_of_a_failed_task_carries_the_error(daemon: ld.LabDaemon) -> None:
    events = listen(daemon)
    with pytest.raises(ld.TaskFailedError):
        daemon.execute_task("t", Raises).wait(10)
    finished = [e for e in events if e["event"] == "task_finished"]
    assert len(finished) == 1
    assert finished[0]["status"] == "failed"
    assert finished[0]["error"]["type"] == "KeyError"
    assert finished[0]["error"]["origin"] == "task"
    recorded = [e for e in events if e["event"] == "error_recorded"]
    assert recorded and recorded[0]["task_id"] == "t"


@pytest.mark.parametrize("progress", [-0.1, 1.5, float("nan")])
def test_progress_out_of_range_is_value_error(progress: float) -> None:
    context = ld.TaskContext(None, "t")
    with pytest.raises(ValueError):
        context.report(progress)


def test_progress_out_of_range_fails_the_task(daemon: ld.LabDaemon) -> None:
    class Overshoots:
        def run(self, context: ld.TaskContext) -> None:
            context.report(2.0)

    handle = daemon.execute_task("t", Overshoots)
    with pytest.raises(ld.TaskFailedError) as info:
        handle.wait(10)
    assert isinstance(info.value.__cause__, ValueError)


def test_task_context_defaults() -> None:
    context = ld.TaskContext("daemon", "t")
    assert context.daemon == "daemon" and context.task_id == "t"
    assert isinstance(context.cancel_event, threading.Event)
    assert not context.cancel_event.is_set()
    assert context.resume_event.is_set()
    context.report(0.5, "fine")  # no reporter: nothing happens, no error


# -- code written for LabDaemon: keyword calls and validated device_ids -----------------------


class Sweep:
    """A task as LabDaemon's docs write them: devices claimed, keyword parameters."""

    def __init__(self, task_id: str, start: float = 0.0, stop: float = 1.0) -> None:
        self.task_id = task_id
        self.start, self.stop = start, stop
        self.device_ids = ["laser1"]

    def run(self, context: ld.TaskContext) -> dict[str, Any]:
        return {"task_id": self.task_id, "span": self.stop - self.start}


class Plain:
    def __init__(self, device_id: str) -> None:
        pass


def test_execute_task_takes_its_first_two_arguments_by_keyword_too(daemon: ld.LabDaemon) -> None:
    daemon.add_device("laser1", Plain)
    daemon.register_plugins(tasks={"Sweep": Sweep})
    by_keyword = daemon.execute_task(task_id="t1", task_type="Sweep", start=1.0, stop=3.0)
    assert by_keyword.wait(10) == {"task_id": "t1", "span": 2.0}
    mixed = daemon.execute_task("t2", task_type=Sweep, stop=5.0)
    assert mixed.wait(10) == {"task_id": "t2", "span": 5.0}
    with daemon.task_context(task_id="t3", task_type="Sweep") as handle:
        assert handle.wait(10)["task_id"] == "t3"
    with pytest.raises(ld.TaskError, match="'t4'"):
        daemon.execute_task(task_id="t4", task_type="Sweep", task_id_typo=1)


@pytest.mark.parametrize(
    "claimed",
    ["laser1", [123], ["laser1", None], {"laser1": True}, 7, [""]],
    ids=["a string", "a number", "None inside", "a dict", "an int", "an empty id"],
)
def test_device_ids_that_are_not_a_list_of_ids_are_refused(
    daemon: ld.LabDaemon, claimed: Any
) -> None:
    for device_id in ("laser1", "l", "a", "s", "123"):
        daemon.add_device(device_id, Plain)

    class Claims:
        device_ids = claimed

        def __init__(self, task_id: str) -> None:
            pass

        def run(self, context: ld.TaskContext) -> None:
            raise AssertionError("must not run")

    with pytest.raises(ld.TaskError) as caught:
        daemon.execute_task("claimer", Claims)
    message = str(caught.value)
    assert "'claimer'" in message and "device_ids" in message and repr(claimed) in message
    assert not isinstance(caught.value, ld.exceptions.UnknownDeviceError)
    assert all(daemon.owner_of(d) is None for d in daemon.list_devices())  # nothing claimed
    assert "claimer" not in daemon.list_tasks()


def test_device_ids_as_a_tuple_are_claimed(daemon: ld.LabDaemon) -> None:
    daemon.add_device("laser1", Plain)
    daemon.add_device("meter1", Plain)
    gate = threading.Event()

    class Both:
        device_ids = ("laser1", "meter1")

        def __init__(self, task_id: str) -> None:
            pass

        def run(self, context: ld.TaskContext) -> None:
            gate.wait(10)

    handle = daemon.execute_task("both", Both)
    assert handle.device_ids == ["laser1", "meter1"]
    assert daemon.owner_of("meter1") == "both"
    gate.set()
    handle.wait(10)


def test_execute_task_shows_the_signature_spec_writes() -> None:
    import inspect

    for method in (ld.LabDaemon.execute_task,):
        params = inspect.signature(method).parameters
        assert list(params) == ["self", "task_id", "task_type", "params"]
        assert params["task_id"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert params["params"].kind is inspect.Parameter.VAR_KEYWORD


def test_execute_task_argument_mistakes_are_clear(daemon: ld.LabDaemon) -> None:
    with pytest.raises(TypeError, match="missing required argument: 'task_type'"):
        daemon.execute_task(task_id="t")
    with pytest.raises(TypeError, match="takes task_id and task_type"):
        daemon.execute_task("t", Returns, "extra")


def test_a_task_parameter_named_task_type_goes_to_the_task_when_ids_are_positional(
    daemon: ld.LabDaemon,
) -> None:
    class Typed:
        def __init__(self, task_id: str, task_type: str = "none") -> None:
            self.kind = task_type

        def run(self, context: ld.TaskContext) -> str:
            return self.kind

    assert daemon.execute_task("typed", Typed, task_type="raman").wait(10) == "raman"
