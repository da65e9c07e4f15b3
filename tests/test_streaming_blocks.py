"""RateLimitedLoop, BackpressureQueue and ErrorBudget from labd.streaming."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import labd_threads, wait_until
from labd.streaming import BackpressureQueue, ErrorBudget, RateLimitedLoop


def work_for(seconds: float) -> None:
    """Simulated slow acquisition: returns no earlier than ``seconds`` from now."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert wait_until(lambda: not [t for t in labd_threads() if t not in before], 5.0), [
        t.name for t in labd_threads() if t not in before
    ]


class TickLog:
    """on_tick hook that records (ideal, actual) and can signal a tick index."""

    def __init__(self, rate_hz: float, until_index: int | None = None) -> None:
        self.period = 1.0 / rate_hz
        self.ticks: list[tuple[float, float]] = []
        self.until_index = until_index
        self.reached = threading.Event()

    def __call__(self, ideal: float, actual: float) -> None:
        self.ticks.append((ideal, actual))
        if self.until_index is not None and self.index(ideal) >= self.until_index:
            self.reached.set()

    def index(self, ideal: float) -> int:
        return round((ideal - self.ticks[0][0]) / self.period)


# ----------------------------------------------------------------- RateLimitedLoop


def test_rate_loop_keeps_to_schedule_without_drift() -> None:
    rate = 100.0
    log = TickLog(rate, until_index=999)
    emitted: list[int] = []
    counter = iter(range(10**9))
    loop = RateLimitedLoop(lambda: next(counter), emitted.append, rate, name="drift", on_tick=log)
    loop.start()
    try:
        assert log.reached.wait(60.0), "1,000 ticks at 100 Hz did not happen within 60 s"
    finally:
        loop.stop(timeout=5.0)
    ticks = log.ticks
    t0 = ticks[0][0]
    indices = [log.index(ideal) for ideal, _ in ticks]
    # Ideal ticks sit exactly on the t0 + k/rate grid; every index either ran or was skipped.
    for (ideal, _), k in zip(ticks, indices, strict=True):
        assert ideal == pytest.approx(t0 + k / rate, abs=1e-6)
    assert indices == sorted(set(indices))
    assert loop.ticks == len(ticks)
    assert loop.ticks + loop.overruns == indices[-1] + 1
    errors = [actual - ideal for ideal, actual in ticks]
    assert min(errors) > -0.001
    first, last = errors[:100], errors[-100:]
    assert abs(sum(last) / len(last) - sum(first) / len(first)) < 0.020
    # No accumulated drift: tick 999 happens close to t0 + 9.99 s, as measured by its start.
    last_ideal, last_actual = next((i, a) for i, a in ticks if log.index(i) >= 999)
    assert last_actual - (t0 + log.index(last_ideal) / rate) < 0.050
    # The same from the wall clock alone: periods counted by the loop vs time elapsed.
    elapsed = ticks[-1][1] - ticks[0][1]
    assert abs((loop.ticks + loop.overruns - 1) - elapsed * rate) < 5
    assert emitted[:10] == list(range(10))
    assert loop.schedule_errors() == pytest.approx(errors[-len(loop.schedule_errors()) :])
    assert not labd_threads("drift")


def test_rate_loop_skips_and_counts_overrun_ticks() -> None:
    rate = 50.0
    period = 1.0 / rate
    slow_calls = {5, 15, 25}
    calls = 0
    log = TickLog(rate)
    done = threading.Event()

    def acquire() -> int:
        nonlocal calls
        calls += 1
        if calls in slow_calls:
            work_for(3 * period)
        if calls >= 40:
            done.set()
        return calls

    loop = RateLimitedLoop(acquire, lambda _: None, rate, name="overrun", on_tick=log)
    loop.start()
    try:
        assert done.wait(30.0)
    finally:
        loop.stop(timeout=5.0)
    indices = [log.index(ideal) for ideal, _ in log.ticks]
    assert indices == sorted(set(indices))
    for call in slow_calls:
        # The slow call covered at least three periods: the two ticks inside it were skipped.
        assert indices[call] - indices[call - 1] >= 3
    assert loop.overruns >= 2 * len(slow_calls)
    assert loop.ticks + loop.overruns == indices[-1] + 1


def test_stop_wakes_a_slow_loop_at_once() -> None:
    first = threading.Event()
    loop = RateLimitedLoop(lambda: 1, lambda _: first.set(), 0.1, name="slow")
    loop.start()
    assert first.wait(10.0)
    assert loop.is_running()
    started = time.monotonic()
    loop.stop(timeout=5.0)
    assert time.monotonic() - started < 1.0
    assert not loop.is_running()
    assert loop.stopped_reason == "stopped"
    assert loop.ticks == 1
    assert not labd_threads("slow")


def test_stop_from_inside_emit_ends_the_loop() -> None:
    emitted: list[int] = []
    counter = iter(range(10**9))
    loop: RateLimitedLoop

    def emit(value: int) -> None:
        emitted.append(value)
        if value == 2:
            loop.stop(timeout=5.0)  # on the loop's own thread: must not join itself
            loop.stop()

    loop = RateLimitedLoop(lambda: next(counter), emit, 500.0, name="self-stop")
    loop.start()
    assert wait_until(lambda: not labd_threads("self-stop"))
    assert emitted == [0, 1, 2]
    assert not loop.is_running()
    assert loop.stopped_reason == "stopped"


def test_stop_during_acquire_emits_nothing_more() -> None:
    in_acquire = threading.Event()
    release = threading.Event()
    emitted: list[str] = []

    released: list[bool] = []  # the loop catches what acquire raises: record, check below

    def acquire() -> str:
        in_acquire.set()
        released.append(release.wait(10.0))
        return "late"

    loop = RateLimitedLoop(acquire, emitted.append, 100.0, name="mid-acquire")
    loop.start()
    assert in_acquire.wait(10.0)
    stopper = threading.Thread(target=loop.stop, kwargs={"timeout": 10.0})
    stopper.start()
    assert wait_until(lambda: not loop.is_running())
    release.set()
    stopper.join(10.0)
    assert not stopper.is_alive()
    assert emitted == []
    assert released == [True]
    assert not labd_threads("mid-acquire")


def test_stop_is_idempotent_and_loop_restarts() -> None:
    emitted: list[int] = []
    loop = RateLimitedLoop(lambda: 7, emitted.append, 200.0, name="restart")
    loop.stop()  # before any start: nothing to do
    loop.start()
    with pytest.raises(RuntimeError, match="already running"):
        loop.start()
    assert wait_until(lambda: loop.ticks >= 3)
    loop.stop(timeout=5.0)
    loop.stop(timeout=5.0)
    assert not loop.is_running()
    assert loop.stopped_reason == "stopped"
    count = len(emitted)
    assert count >= 3

    loop.start()
    assert loop.is_running()
    assert loop.stopped_reason is None
    assert wait_until(lambda: len(emitted) >= count + 3)
    loop.stop(timeout=5.0)
    assert not labd_threads("restart")


def test_unhandled_error_is_logged_and_stops_the_loop(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = 0

    def acquire() -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("sensor unplugged")
        return calls

    with caplog.at_level(logging.ERROR, logger="labd.streaming"):
        loop = RateLimitedLoop(acquire, lambda _: None, 500.0, name="boom")
        loop.start()
        assert wait_until(lambda: not labd_threads("boom"))
    assert loop.stopped_reason == "error"
    assert isinstance(loop.last_error, ValueError)
    assert loop.ticks == 3
    assert not loop.is_running()
    assert any(r.exc_info and r.exc_info[1] is loop.last_error for r in caplog.records)
    out, err = capsys.readouterr()
    assert out == err == ""


def test_error_budget_stops_the_loop_when_exhausted() -> None:
    exhausted_with: list[BaseException] = []
    budget = ErrorBudget(3, on_exhausted=exhausted_with.append)
    calls = 0

    def acquire() -> int:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(f"read {calls} failed")
        return calls

    emitted: list[int] = []
    loop = RateLimitedLoop(acquire, emitted.append, 500.0, name="budget", error_budget=budget)
    loop.start()
    assert wait_until(lambda: not labd_threads("budget"))
    assert loop.stopped_reason == "error_budget"
    assert emitted == [1, 2]
    assert loop.ticks == 5
    assert budget.exhausted
    assert budget.total_failures == 3
    assert len(exhausted_with) == 1
    assert str(exhausted_with[0]) == "read 5 failed"


def test_error_budget_with_intermittent_failures_keeps_running() -> None:
    budget = ErrorBudget(3)
    calls = 0

    def acquire() -> int:
        nonlocal calls
        calls += 1
        if calls % 3:  # two failures, then a success, over and over
            raise TimeoutError("no reply")
        return calls

    seen: list[Exception] = []
    loop = RateLimitedLoop(
        acquire, lambda _: None, 1000.0, name="flaky", error_budget=budget, on_error=seen.append
    )
    loop.start()
    try:
        assert wait_until(lambda: loop.ticks >= 30)
        assert loop.is_running()
    finally:
        loop.stop(timeout=5.0)
    assert not budget.exhausted
    assert budget.total_failures >= 20
    assert len(seen) == budget.total_failures
    assert loop.stopped_reason == "stopped"


def test_on_error_hook_handles_errors_and_a_failing_hook_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Exception] = []

    def on_error(exc: Exception) -> None:
        seen.append(exc)
        if len(seen) == 5:
            raise RuntimeError("hook gave up")

    def acquire() -> None:
        raise KeyError("channel")

    with caplog.at_level(logging.ERROR, logger="labd.streaming"):
        loop = RateLimitedLoop(acquire, lambda _: None, 1000.0, name="hook", on_error=on_error)
        loop.start()
        assert wait_until(lambda: not labd_threads("hook"))
    assert len(seen) == 5
    assert loop.ticks == 5
    assert loop.stopped_reason == "error"
    assert [r for r in caplog.records if "on_error hook" in r.getMessage()]


def test_rate_loop_rejects_bad_rates() -> None:
    for rate in (0, -1.0, float("inf"), float("nan"), "fast"):
        with pytest.raises(ValueError, match="rate_hz"):
            RateLimitedLoop(lambda: None, lambda _: None, rate)  # type: ignore[arg-type]


def test_loop_thread_is_named_and_daemon() -> None:
    ticked = threading.Event()
    loop = RateLimitedLoop(lambda: None, lambda _: ticked.set(), 100.0, name="named")
    loop.start()
    try:
        assert ticked.wait(10.0)
        (thread,) = labd_threads("named")
        assert thread.name == "labd-loop-named"
        assert thread.daemon
    finally:
        loop.stop(timeout=5.0)
    assert not labd_threads("named")


# --------------------------------------------------------------- BackpressureQueue


def test_queue_with_a_slow_consumer_stays_bounded_and_counts_exactly() -> None:
    maxsize = 10
    received: list[int] = []

    def slow_callback(item: int) -> None:
        received.append(item)
        work_for(0.002)

    queue = BackpressureQueue(slow_callback, maxsize=maxsize, name="slow")
    queue.start()
    produced = 0
    largest_pending = 0
    for i in range(300):
        queue.put(i)
        produced += 1
        largest_pending = max(largest_pending, queue.pending)
        work_for(0.0002)  # the producer is ten times faster than the consumer
    queue.stop(timeout=10.0, drain=True)
    assert not labd_threads("slow")
    assert largest_pending <= maxsize
    assert queue.dropped > 0
    assert queue.pending == 0
    assert queue.delivered + queue.dropped == produced
    assert queue.delivered == len(received)
    assert received == sorted(received)


def test_queue_drops_when_full_without_blocking() -> None:
    entered = threading.Event()
    gate = threading.Event()
    opened: list[bool] = []  # the queue catches what its callback raises: check below

    def blocked(item: int) -> None:
        entered.set()
        opened.append(gate.wait(10.0))

    queue = BackpressureQueue(blocked, maxsize=3, name="full")
    queue.start()
    try:
        assert queue.put(0)
        assert entered.wait(10.0)
        assert [queue.put(i) for i in (1, 2)] == [True, True]
        started = time.monotonic()
        assert queue.put(3) is False  # full: two queued plus one in the callback
        assert time.monotonic() - started < 0.5
        assert (queue.delivered, queue.dropped, queue.pending) == (0, 1, 3)
    finally:
        gate.set()
        queue.stop(timeout=10.0, drain=True)
    assert (queue.delivered, queue.dropped, queue.pending) == (3, 1, 0)
    assert opened == [True, True, True]


def test_queue_stop_discards_pending_items_and_counts_them() -> None:
    entered = threading.Event()
    gate = threading.Event()
    received: list[int] = []

    opened: list[bool] = []  # the queue catches what its callback raises: check below

    def blocked(item: int) -> None:
        received.append(item)
        entered.set()
        opened.append(gate.wait(10.0))

    queue = BackpressureQueue(blocked, maxsize=10, name="discard")
    queue.start()
    assert queue.put(0)
    assert entered.wait(10.0)
    for i in range(1, 5):
        assert queue.put(i)
    queue.stop(timeout=0)  # item 0 is still in the callback
    assert (queue.delivered, queue.dropped, queue.pending) == (0, 4, 1)
    assert queue.put(99) is False
    gate.set()
    queue.stop(timeout=10.0)
    assert not labd_threads("discard")
    assert received == [0]
    assert (queue.delivered, queue.dropped, queue.pending) == (1, 5, 0)
    assert opened == [True]


def test_queue_delivers_everything_in_order_when_not_full() -> None:
    received: list[int] = []
    queue = BackpressureQueue(received.append, maxsize=2000, name="order")
    assert queue.put(-1) is False  # not started yet: dropped
    queue.start()
    assert all(queue.put(i) for i in range(1000))
    queue.stop(timeout=10.0, drain=True)
    assert received == list(range(1000))
    assert (queue.delivered, queue.dropped, queue.pending) == (1000, 1, 0)


def test_queue_counts_are_exact_with_concurrent_producers() -> None:
    queue = BackpressureQueue(lambda _: None, maxsize=50, name="concurrent")
    queue.start()
    per_thread, producers = 5000, 4
    go = threading.Event()

    def produce() -> None:
        assert go.wait(10.0)
        for i in range(per_thread):
            queue.put(i)

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(30.0)
        assert not thread.is_alive()
    queue.stop(timeout=10.0, drain=True)
    assert queue.pending == 0
    assert queue.delivered + queue.dropped == per_thread * producers


def test_callback_errors_are_counted_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[int] = []

    def picky(item: int) -> None:
        if item % 2:
            raise ValueError(f"odd item {item}")
        received.append(item)

    with caplog.at_level(logging.ERROR, logger="labd.streaming"):
        queue = BackpressureQueue(picky, maxsize=100, name="picky")
        queue.start()
        for i in range(10):
            assert queue.put(i)
        queue.stop(timeout=10.0, drain=True)
    assert received == [0, 2, 4, 6, 8]
    assert queue.delivered == 10
    assert queue.callback_errors == 5
    assert len([r for r in caplog.records if r.exc_info]) == 5


def test_queue_on_error_hook_receives_callback_errors() -> None:
    seen: list[Exception] = []

    def failing(item: Any) -> None:
        raise RuntimeError(item)

    queue = BackpressureQueue(failing, name="hooked", on_error=seen.append)
    queue.start()
    for i in range(3):
        queue.put(i)
    queue.stop(timeout=10.0, drain=True)
    assert [exc.args[0] for exc in seen] == [0, 1, 2]
    assert queue.callback_errors == 3


def test_queue_stop_from_inside_the_callback() -> None:
    received: list[int] = []
    queue: BackpressureQueue
    gate = threading.Event()
    opened: list[bool] = []  # the queue catches what its callback raises: check below

    def callback(item: int) -> None:
        opened.append(gate.wait(10.0))
        received.append(item)
        if item == 2:
            queue.stop(timeout=5.0)
            queue.stop()

    queue = BackpressureQueue(callback, maxsize=100, name="inside")
    queue.start()
    for i in range(10):
        assert queue.put(i)
    gate.set()
    assert wait_until(lambda: not labd_threads("inside"))
    assert received == [0, 1, 2]
    assert (queue.delivered, queue.dropped, queue.pending) == (3, 7, 0)
    assert not queue.is_running()
    assert opened == [True, True, True]


def test_queue_restarts_and_names_its_thread() -> None:
    received: list[str] = []
    queue = BackpressureQueue(received.append, name="again")
    queue.start()
    with pytest.raises(RuntimeError, match="already running"):
        queue.start()
    (thread,) = labd_threads("again")
    assert thread.name == "labd-queue-again"
    assert thread.daemon
    queue.put("a")
    queue.stop(timeout=10.0, drain=True)
    queue.stop(timeout=10.0)
    queue.start()
    queue.put("b")
    queue.stop(timeout=10.0, drain=True)
    assert received == ["a", "b"]
    assert not labd_threads("again")


def test_queue_rejects_bad_maxsize() -> None:
    for size in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="maxsize"):
            BackpressureQueue(lambda _: None, maxsize=size)  # type: ignore[arg-type]


def test_loop_and_queue_compose_into_a_device() -> None:
    received: list[int] = []
    enough = threading.Event()

    def consume(item: int) -> None:
        received.append(item)
        if len(received) >= 20:
            enough.set()

    counter = iter(range(10**9))
    queue = BackpressureQueue(consume, maxsize=10, name="dev")
    loop = RateLimitedLoop(lambda: next(counter), queue.put, 500.0, name="dev")
    queue.start()
    loop.start()
    assert enough.wait(10.0)
    loop.stop(timeout=5.0)
    queue.stop(timeout=5.0, drain=True)
    assert received == sorted(received)
    assert queue.delivered + queue.dropped == loop.ticks
    assert not labd_threads("dev")


# --------------------------------------------------------------------- ErrorBudget


def test_budget_is_exhausted_after_limit_consecutive_failures() -> None:
    calls: list[BaseException] = []
    budget = ErrorBudget(3, on_exhausted=calls.append)
    errors = [OSError(i) for i in range(5)]
    assert budget.record_failure(errors[0]) is False
    assert budget.record_failure(errors[1]) is False
    assert not budget.exhausted
    assert budget.record_failure(errors[2]) is True
    assert budget.exhausted
    assert calls == [errors[2]]
    budget.record_failure(errors[3])
    budget.record_success()
    budget.record_failure(errors[4])
    assert calls == [errors[2]]  # once per exhaustion
    assert budget.exhausted  # stays exhausted until reset()
    assert budget.total_failures == 5
    assert budget.consecutive_failures == 1
    assert budget.last_error is errors[4]


def test_budget_success_breaks_the_run_of_failures() -> None:
    budget = ErrorBudget(3)
    for _ in range(4):
        budget.record_failure(ValueError())
        budget.record_failure(ValueError())
        budget.record_success()
    assert not budget.exhausted
    assert budget.consecutive_failures == 0
    assert budget.total_failures == 8


def test_budget_reset_rearms_on_exhausted() -> None:
    calls: list[BaseException] = []
    budget = ErrorBudget(1, on_exhausted=calls.append)
    budget.record_failure(ValueError("a"))
    budget.reset()
    assert not budget.exhausted
    assert (budget.consecutive_failures, budget.total_failures, budget.last_error) == (0, 0, None)
    budget.record_failure(ValueError("b"))
    assert [str(e) for e in calls] == ["a", "b"]


def test_budget_calls_on_exhausted_once_under_concurrency() -> None:
    calls: list[BaseException] = []
    budget = ErrorBudget(100, on_exhausted=calls.append)
    go = threading.Event()

    def fail_many() -> None:
        assert go.wait(10.0)
        for _ in range(1000):
            budget.record_failure(RuntimeError())

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(30.0)
    assert budget.total_failures == 8000
    assert budget.consecutive_failures == 8000
    assert len(calls) == 1


def test_budget_hook_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def bad_hook(exc: BaseException) -> None:
        raise RuntimeError("hook broke")

    budget = ErrorBudget(1, on_exhausted=bad_hook)
    with caplog.at_level(logging.ERROR, logger="labd.streaming"):
        assert budget.record_failure(ValueError()) is True
    assert any("on_exhausted" in r.getMessage() for r in caplog.records)


def test_budget_rejects_bad_limits() -> None:
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            ErrorBudget(limit)  # type: ignore[arg-type]


def test_an_exhausted_budget_tells_on_error_why_the_loop_stopped() -> None:
    from labd.exceptions import ErrorBudgetExhausted

    seen: list[Exception] = []

    def acquire() -> float:
        raise OSError("instrument gone")

    loop = RateLimitedLoop(
        acquire,
        lambda _: None,
        500.0,
        name="why",
        error_budget=ErrorBudget(4),
        on_error=seen.append,
    )
    loop.start()
    assert wait_until(lambda: not loop.is_running())
    assert loop.stopped_reason == "error_budget"
    assert [type(e) for e in seen] == [OSError] * 4 + [ErrorBudgetExhausted]
    reason = seen[-1]
    assert "4 consecutive failures" in str(reason)
    assert "OSError: instrument gone" in str(reason)
    assert reason.__cause__ is seen[-2]
