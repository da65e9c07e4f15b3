"""Devices under labd: construction, id injection, lock injection and wrapping, introspection,
timed calls (SPEC section 1)."""

from __future__ import annotations

import inspect
import threading
import time
import types
from concurrent.futures import CancelledError
from typing import Any, ClassVar

import pytest

import labd as ld
from helpers import wait_until
from labd.calls import CallJob, CallWorker
from labd.devices import DeviceBusy, describe_methods, instantiate, is_query

# -- device_id injection -----------------------------------------------------------------


class TakesId:
    def __init__(self, device_id: str, gain: float = 1.0) -> None:
        self.given_id = device_id
        self.gain = gain


class TakesKwargs:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class TakesNeither:
    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain


class TakesIdAndKwargs:
    def __init__(self, device_id: str, **kwargs: Any) -> None:
        self.given_id = device_id
        self.kwargs = kwargs


def test_device_id_passed_when_init_names_it(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("a", TakesId, gain=2.0)
    assert dev.given_id == "a"
    assert dev.device_id == "a"
    assert dev.gain == 2.0


def test_device_id_passed_through_kwargs(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("a", TakesKwargs, gain=2.0)
    assert dev.kwargs == {"device_id": "a", "gain": 2.0}
    assert dev.device_id == "a"


def test_device_id_not_passed_when_init_does_not_accept_it(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("a", TakesNeither, gain=3.0)
    assert dev.gain == 3.0
    assert dev.device_id == "a"


@pytest.mark.parametrize("cls", [TakesId, TakesKwargs, TakesNeither, TakesIdAndKwargs])
def test_explicit_equal_device_id_in_params_is_accepted(daemon: ld.LabDaemon, cls: type) -> None:
    dev = daemon.add_device("a", cls, device_id="a")
    assert dev.device_id == "a"
    if hasattr(dev, "given_id"):
        assert dev.given_id == "a"
    if isinstance(dev, TakesIdAndKwargs):
        assert dev.kwargs == {}


@pytest.mark.parametrize("cls", [TakesId, TakesKwargs, TakesNeither])
def test_explicit_different_device_id_is_an_error(daemon: ld.LabDaemon, cls: type) -> None:
    with pytest.raises(ld.DeviceConfigurationError) as info:
        daemon.add_device("a", cls, device_id="b")
    assert "'a'" in str(info.value) and "'b'" in str(info.value)
    assert "multiple values" not in str(info.value)
    assert daemon.list_devices() == []


def test_bad_params_raise_configuration_error_naming_the_device(daemon: ld.LabDaemon) -> None:
    with pytest.raises(ld.DeviceConfigurationError, match="'a'"):
        daemon.add_device("a", TakesNeither, bogus=1)
    with pytest.raises(ld.DeviceConfigurationError, match="'b'"):
        daemon.add_device("b", TakesId, gain=1.0, extra=2)
    assert daemon.list_devices() == []


def test_instantiate_for_tasks_uses_task_id() -> None:
    class Task:
        def __init__(self, task_id: str, n: int = 0) -> None:
            self.tid = task_id
            self.n = n

    obj = instantiate(Task, "t1", {"n": 3, "task_id": "t1"}, kind="task")
    assert (obj.tid, obj.n, obj.task_id) == ("t1", 3, "t1")


def test_device_id_attribute_set_even_if_init_stores_another(daemon: ld.LabDaemon) -> None:
    class Renames:
        def __init__(self, device_id: str) -> None:
            self.device_id = device_id.upper()

    assert daemon.add_device("abc", Renames).device_id == "abc"


# -- wrapping ----------------------------------------------------------------------------


class Base:
    def inherited(self) -> bool:
        """Defined on a base class."""
        return bool(self._ld_lock._is_owned())  # type: ignore[attr-defined]


class Probe(Base):
    hook: ClassVar[Any] = None

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.instance_callable = lambda: self._ld_lock._is_owned()
        self.plain_attribute = 42

    def owned(self) -> bool:
        """Whether the calling thread holds the device lock."""
        return bool(self._ld_lock._is_owned())

    def set_value(self, value: float, *, unit: str = "V", scale: int = 1) -> float:
        """Set a value (returns it scaled)."""
        return value * scale

    def nested(self) -> bool:
        """A public method calling another one (the lock is re-entrant)."""
        return self.owned() and self._private()

    def _private(self) -> bool:
        return bool(self._ld_lock._is_owned())

    @property
    def prop(self) -> bool:
        return bool(self._ld_lock._is_owned())

    @classmethod
    def cm(cls, x: int) -> int:
        """A classmethod."""
        return x if cls.hook is None else cls.hook()

    @staticmethod
    def sm(x: int) -> int:
        """A staticmethod."""
        return x if Probe.hook is None else Probe.hook()

    @ld.query
    def measure(self) -> float:
        """Read-only, marked as a query."""
        return 1.0

    def get_thing(self) -> int:
        return 1

    def is_ready(self) -> bool:
        return True

    def has_fault(self) -> bool:
        return False


@pytest.fixture
def probe(daemon: ld.LabDaemon) -> Any:
    Probe.hook = None
    yield daemon.add_device("p", Probe)
    Probe.hook = None


def test_wrapped_object_is_the_same_instance(daemon: ld.LabDaemon, probe: Any) -> None:
    assert isinstance(probe, Probe)
    assert type(probe) is Probe
    assert daemon.get_device("p") is probe
    assert probe.plain_attribute == 42


def test_lock_is_an_rlock_of_its_own(daemon: ld.LabDaemon, probe: Any) -> None:
    other = daemon.add_device("q", Probe)
    assert isinstance(probe._ld_lock, type(threading.RLock()))
    assert probe._ld_lock is not other._ld_lock


def test_public_methods_hold_the_lock(probe: Any) -> None:
    assert probe.owned() is True
    assert probe.inherited() is True
    assert probe.nested() is True
    assert not probe._ld_lock._is_owned()


def test_class_and_static_methods_are_wrapped(probe: Any) -> None:
    Probe.hook = lambda: int(probe._ld_lock._is_owned())
    assert probe.cm(5) == 1
    assert probe.sm(5) == 1
    # The class itself is untouched: only the instance is wrapped.
    assert Probe.cm(5) == 0
    assert Probe.sm(5) == 0


def test_private_methods_properties_and_instance_callables_are_not_wrapped(probe: Any) -> None:
    assert probe._private() is False
    assert probe.prop is False
    assert probe.instance_callable() is False
    assert "_private" not in vars(probe)


def test_methods_added_after_add_device_are_not_wrapped(probe: Any) -> None:
    probe.late = types.MethodType(lambda self: self._ld_lock._is_owned(), probe)
    assert probe.late() is False


def test_other_instances_of_the_class_are_not_wrapped(probe: Any) -> None:
    plain = Probe("x")
    plain._ld_lock = threading.RLock()
    assert plain.owned() is False
    assert "owned" not in vars(plain)
    assert "owned" in vars(probe)


def test_wrappers_keep_name_doc_and_signature(probe: Any) -> None:
    plain = Probe("x")
    for name in ("owned", "set_value", "inherited", "cm", "sm", "measure"):
        wrapped = getattr(probe, name)
        original = getattr(plain, name)
        assert wrapped.__name__ == name
        assert wrapped.__doc__ == original.__doc__
        assert inspect.signature(wrapped) == inspect.signature(original)
    sig = inspect.signature(probe.set_value)
    assert list(sig.parameters) == ["value", "unit", "scale"]
    assert probe.set_value(2.0, scale=3) == 6.0


def test_each_device_has_its_own_lock(daemon: ld.LabDaemon) -> None:
    class Blocker:
        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()

        def block(self) -> None:
            self.entered.set()
            assert self.release.wait(10)

        def ping(self) -> str:
            return "pong"

    a = daemon.add_device("a", Blocker)
    b = daemon.add_device("b", Blocker)
    thread = threading.Thread(target=a.block, name="test-blocker")
    thread.start()
    try:
        assert a.entered.wait(10)
        assert b.ping() == "pong"  # b is free while a's lock is held
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.append(a.ping()), name="test-waiter")
        waiter.start()
        waiter.join(0.1)
        assert got == []  # a's second call waits for the first
    finally:
        a.release.set()
        thread.join(10)
        waiter.join(10)
    assert got == ["pong"]


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.inside = 0
        self.max_inside = 0

    def increment(self) -> None:
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        value = self.count
        time.sleep(0)  # invite a thread switch in the middle of the read-modify-write
        self.count = value + 1
        self.inside -= 1


def test_calls_from_many_threads_are_serialised(daemon: ld.LabDaemon) -> None:
    dev = daemon.add_device("c", Counter)
    threads_n, calls_n = 8, 300
    barrier = threading.Barrier(threads_n)

    def hammer() -> None:
        barrier.wait(10)
        for _ in range(calls_n):
            dev.increment()

    threads = [threading.Thread(target=hammer, name=f"test-hammer-{i}") for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert dev.max_inside == 1
    assert dev.inside == 0
    assert dev.count == threads_n * calls_n


# -- introspection -------------------------------------------------------------------------


def test_describe_methods_lists_public_methods_with_parameters(
    daemon: ld.LabDaemon, probe: Any
) -> None:
    methods = {m["name"]: m for m in daemon.device_methods("p")}
    assert "_private" not in methods and "prop" not in methods
    assert {"owned", "set_value", "inherited", "cm", "sm", "measure"} <= set(methods)
    set_value = methods["set_value"]
    assert set_value["doc"] == "Set a value (returns it scaled)."
    assert set_value["returns"] == "float"
    assert set_value["parameters"] == [
        {
            "name": "value",
            "kind": "positional_or_keyword",
            "required": True,
            "default": None,
            "annotation": "float",
            "choices": None,
        },
        {
            "name": "unit",
            "kind": "keyword_only",
            "required": False,
            "default": "V",
            "annotation": "str",
            "choices": None,
        },
        {
            "name": "scale",
            "kind": "keyword_only",
            "required": False,
            "default": 1,
            "annotation": "int",
            "choices": None,
        },
    ]


def test_query_flags(daemon: ld.LabDaemon, probe: Any) -> None:
    flags = {m["name"]: m["query"] for m in daemon.device_methods("p")}
    assert flags["measure"] is True  # @ld.query
    assert flags["get_thing"] is True
    assert flags["is_ready"] is True
    assert flags["has_fault"] is True
    assert flags["set_value"] is False
    assert flags["owned"] is False
    assert is_query("measure", probe.measure)  # through the lock wrapper too


def test_query_decorator_returns_the_function() -> None:
    def read() -> int:
        return 1

    assert ld.query(read) is read
    assert is_query("read", read)


def test_describe_methods_handles_var_args() -> None:
    def f(a, *args, b=None, **kw):  # type: ignore[no-untyped-def]
        pass

    (info,) = describe_methods({"f": f})
    kinds = [(p["name"], p["kind"], p["required"]) for p in info["parameters"]]
    assert kinds == [
        ("a", "positional_or_keyword", True),
        ("args", "var_positional", False),
        ("b", "keyword_only", False),
        ("kw", "var_keyword", False),
    ]
    assert info["doc"] is None and info["returns"] is None


# -- timed calls --------------------------------------------------------------------------


def test_call_worker_runs_calls_on_a_named_daemon_thread() -> None:
    worker = CallWorker("dev")
    try:
        thread = worker.call(5.0, threading.current_thread)
        assert thread.name == "labd-call-dev"
        assert thread.daemon
        assert worker.call(5.0, lambda x, y=0: x + y, 2, y=3) == 5
        with pytest.raises(KeyError):
            worker.call(5.0, {}.__getitem__, "missing")
    finally:
        assert worker.close(5.0)


def test_call_worker_timeout_then_busy_until_the_late_call_returns() -> None:
    worker = CallWorker("slow")
    release = threading.Event()
    started = threading.Event()

    def hang() -> str:
        started.set()
        release.wait(30)
        return "late"

    try:
        t0 = time.monotonic()
        with pytest.raises(ld.DeviceTimeoutError, match="'slow'"):
            worker.call(0.2, hang)
        assert time.monotonic() - t0 < 5.0
        assert started.is_set()
        assert worker.hung
        with pytest.raises(DeviceBusy):
            worker.call(5.0, lambda: 1)
        assert issubclass(DeviceBusy, ld.DeviceTimeoutError)
        release.set()
        assert wait_until(lambda: not worker.hung)
        assert worker.call(5.0, lambda: 2) == 2
    finally:
        release.set()
        assert worker.close(5.0)


def test_call_worker_skips_a_call_whose_caller_gave_up_in_line() -> None:
    worker = CallWorker("line")
    release = threading.Event()
    ran: list[str] = []
    try:
        first = worker.submit(lambda: release.wait(30))
        second = worker.submit(lambda: ran.append("second"))
        worker.abandon(second)  # still queued: dropped, not run
        assert not worker.hung
        release.set()
        assert worker.wait(first, 10) is True
        assert worker.call(5.0, lambda: ran.append("third")) is None
        assert ran == ["third"]
    finally:
        release.set()
        assert worker.close(5.0)


def test_call_worker_is_free_again_when_a_late_call_wakes_its_caller() -> None:
    # The worker's own bookkeeping ends before the caller is woken: a callback of the
    # late call finds the device free and can call it again at once.
    worker = CallWorker("late")
    release = threading.Event()
    seen: list[Any] = []
    try:
        job = worker.submit(release.wait, 30)
        with pytest.raises(ld.DeviceTimeoutError):
            worker.wait(job, 0.05)
        assert worker.hung
        job.add_done_callback(lambda j: seen.append((worker.hung, j.result(), worker.submit(int))))
        release.set()
        assert wait_until(lambda: seen)
        hung, result, again = seen[0]
        assert hung is False and result is True
        assert worker.wait(again, 10) == 0
    finally:
        release.set()
        assert worker.close(5.0)


def test_call_worker_runs_or_drops_each_call_exactly_once_when_callers_give_up() -> None:
    # Giving up races the call thread taking the job: each job must end run or dropped,
    # never both and never neither, and the device must never stay marked busy.
    worker = CallWorker("race")
    ran: list[int] = []
    outcomes = {"dropped": 0, "ran": 0}
    try:
        for i in range(3000):
            job = worker.submit(ran.append, i)
            if i % 2:
                time.sleep(0)  # lets the call thread take some jobs first: both sides win
            gave_up = worker.abandon(job)
            assert wait_until(lambda j=job: j.done() and not worker.hung, 10), i
            if job.dropped():
                assert gave_up and i not in ran[-3:]
                outcomes["dropped"] += 1
            else:
                assert ran[-1] == i and job.result() is None
                outcomes["ran"] += 1
        assert sorted(ran) == ran and len(ran) == len(set(ran)) == outcomes["ran"]
        assert outcomes["dropped"] > 0 and outcomes["ran"] > 0  # both sides of the race
    finally:
        assert worker.close(5.0)


def test_call_job_outcomes_and_callbacks() -> None:
    worker = CallWorker("jobs")
    release = threading.Event()
    try:
        blocker = worker.submit(release.wait, 30)
        queued = worker.submit(lambda: "never")
        assert not queued.done()
        with pytest.raises(RuntimeError, match="not finished"):
            queued.result()
        calls: list[CallJob] = []
        queued.add_done_callback(calls.append)
        assert worker.abandon(queued) is True  # dropped in line
        assert queued.done() and queued.dropped() and calls == [queued]
        assert queued.exception() is None
        with pytest.raises(CancelledError):
            queued.result()
        release.set()
        assert worker.wait(blocker, 10) is True
        assert worker.abandon(blocker) is False  # finished: nothing to give up
        assert not worker.hung

        failing = worker.submit({}.__getitem__, "missing")
        with pytest.raises(KeyError):
            worker.wait(failing, 10)
        assert isinstance(failing.exception(), KeyError)
        late: list[CallJob] = []
        failing.add_done_callback(late.append)  # already done: runs at once
        assert late == [failing]
    finally:
        release.set()
        assert worker.close(5.0)


def _close_while_submitting(submitters: int, calls: int) -> None:
    worker = CallWorker("closing")
    worker.call(5.0, int)  # the call thread is up
    accepted: list[CallJob] = []
    refused = 0
    start = threading.Barrier(submitters + 1)

    def submitter() -> None:
        nonlocal refused
        start.wait(5)
        for _ in range(calls):
            try:
                accepted.append(worker.submit(int))
            except RuntimeError:
                refused += 1

    threads = [threading.Thread(target=submitter) for _ in range(submitters)]
    for t in threads:
        t.start()
    start.wait(5)
    assert worker.close(10.0)
    for t in threads:
        t.join(10)
    assert len(accepted) + refused == submitters * calls
    assert all(job.done() for job in accepted)
    assert not worker._waiting
    with pytest.raises(RuntimeError):
        worker.submit(int)


def test_calls_queued_while_a_worker_closes_run_or_are_refused_never_stranded() -> None:
    # enqueue takes no lock: a job queued after close()'s end marker must be taken back.
    for _ in range(20):
        _close_while_submitting(submitters=4, calls=200)


def test_call_worker_close_reports_a_busy_thread_and_refuses_new_calls() -> None:
    worker = CallWorker("stuck")
    release = threading.Event()
    try:
        worker.submit(lambda: release.wait(30))
        assert worker.close(0.05) is False
        with pytest.raises(RuntimeError):
            worker.submit(lambda: None)
    finally:
        release.set()
        thread = worker.thread
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()
