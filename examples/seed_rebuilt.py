"""The five behaviours of ``seed_devices.py``, rebuilt on ``labd.streaming``.

No hand-written threads: ``RateLimitedLoop`` paces acquisition,
``BackpressureQueue`` decouples a slow consumer and ``ErrorBudget`` decides
when repeated failures end the stream. Errors are reported through the
callback's ``error(exc)`` (labd's stream hub records them and tells
subscribers) instead of printed; with a plain function as callback they are
logged.
"""

import math
import threading
import time

import pyvisa

import labd as ld
from labd.streaming import BackpressureQueue, ErrorBudget, RateLimitedLoop


def acquire_sample():
    """A slow sine standing in for an instrument reading."""
    return math.sin(2 * math.pi * 0.5 * time.time())


def error_budget(callback, limit=10):
    """Allows ``limit`` failures in a row, then tells the callback the stream is over."""
    end = getattr(callback, "end", None)
    return ErrorBudget(limit, on_exhausted=(lambda exc: end()) if end else None)


def make_loop(name, acquire, emit, rate_hz, callback, budget=None):
    """A loop that reports errors to ``callback.error`` and stops when the budget runs out."""
    return RateLimitedLoop(
        acquire,
        emit,
        rate_hz,
        name=name,
        error_budget=error_budget(callback) if budget is None else budget,
        on_error=getattr(callback, "error", None),
    )


class ThreadSafeStreamingDevice:
    """Streams at 100 Hz and keeps the latest sample, updated under ``_ld_lock``."""

    def __init__(self, device_id, **kwargs):
        self.device_id = device_id
        self._latest_data = None
        self._loop = None

    def start_streaming(self, callback, **kwargs):
        self._loop = make_loop(self.device_id, self._acquire, callback, 100.0, callback)
        self._loop.start()

    def stop_streaming(self, timeout=None):
        if self._loop:
            self._loop.stop(timeout)

    def is_streaming(self):
        return self._loop is not None and self._loop.is_running()

    def get_latest_data(self):
        return self._latest_data

    def _acquire(self):
        data = acquire_sample()
        with self._ld_lock:  # injected by labd
            self._latest_data = data
        return data


class RateLimitedStreamingDevice:
    """Streams at ``sample_rate`` Hz, on a drift-free schedule."""

    def __init__(self, device_id, **kwargs):
        self.device_id = device_id
        self._loop = None

    def start_streaming(self, callback, sample_rate=10.0):
        self._loop = make_loop(self.device_id, acquire_sample, callback, sample_rate, callback)
        self._loop.start()

    def stop_streaming(self, timeout=None):
        if self._loop:
            self._loop.stop(timeout)

    def is_streaming(self):
        return self._loop is not None and self._loop.is_running()


class VISAStreamingDevice:
    """Queries a VISA instrument; three failed queries in a row end the stream."""

    def __init__(self, device_id, address, query_command="MEAS?", **kwargs):
        self.device_id = device_id
        self.address = address
        self.query_command = query_command
        self._instrument = None
        self._loop = None

    def connect(self):
        self._instrument = pyvisa.ResourceManager().open_resource(self.address)
        self._instrument.timeout = 5000

    def disconnect(self):
        if self._loop:
            self._loop.stop(timeout=5.0)
        if self._instrument:
            self._instrument.close()
            self._instrument = None

    def start_streaming(self, callback, sample_rate=10.0):
        if not self._instrument:
            raise RuntimeError(f"{self.device_id} is not connected")
        budget = error_budget(callback, limit=3)
        self._loop = make_loop(self.device_id, self._query, callback, sample_rate, callback, budget)
        self._loop.start()

    def stop_streaming(self, timeout=None):
        if self._loop:
            self._loop.stop(timeout)

    def is_streaming(self):
        return self._loop is not None and self._loop.is_running()

    def _query(self):
        return float(self._instrument.query(self.query_command).strip())


class RobustStreamingDevice:
    """Survives failing callbacks, counts them, and stops after 10 in a row."""

    def __init__(self, device_id, **kwargs):
        self.device_id = device_id
        self._loop = None
        self._budget = ErrorBudget(10)

    def start_streaming(self, callback, **kwargs):
        self._budget = error_budget(callback, limit=10)
        self._loop = make_loop(
            self.device_id, acquire_sample, callback, 100.0, callback, self._budget
        )
        self._loop.start()

    def stop_streaming(self, timeout=None):
        if self._loop:
            self._loop.stop(timeout)

    def is_streaming(self):
        return self._loop is not None and self._loop.is_running()

    def get_error_count(self):
        return self._budget.total_failures


class BackpressureStreamingDevice:
    """Acquires at ``sample_rate``; a slow callback makes the queue drop, never the device wait."""

    def __init__(self, device_id, max_queue_size=100, **kwargs):
        self.device_id = device_id
        self.max_queue_size = max_queue_size
        self._loop = None
        self._queue = None

    def start_streaming(self, callback, sample_rate=10.0):
        report = getattr(callback, "error", None)
        self._queue = BackpressureQueue(
            callback, self.max_queue_size, name=self.device_id, on_error=report
        )
        put = self._queue.put
        self._loop = make_loop(self.device_id, acquire_sample, put, sample_rate, callback)
        self._queue.start()
        self._loop.start()

    def stop_streaming(self, timeout=None):
        if self._loop:
            self._loop.stop(timeout)
        if self._queue:
            self._queue.stop(timeout)

    def is_streaming(self):
        return self._loop is not None and self._loop.is_running()

    def get_dropped_count(self):
        return self._queue.dropped if self._queue else 0


def main():
    """Stream each rebuilt device through a LabDaemon for a moment."""
    daemon = ld.LabDaemon()
    try:
        for cls, kwargs in (
            (ThreadSafeStreamingDevice, {}),
            (RateLimitedStreamingDevice, {"sample_rate": 50.0}),
            (RobustStreamingDevice, {}),
            (BackpressureStreamingDevice, {"sample_rate": 50.0}),
        ):
            device_id = cls.__name__
            daemon.add_device(device_id, cls)
            received = []
            enough = threading.Event()

            def on_sample(value, received=received, enough=enough):
                received.append(value)
                if len(received) >= 5:
                    enough.set()

            daemon.start_streaming(device_id, on_sample, **kwargs)
            enough.wait(timeout=10.0)
            daemon.stop_streaming(device_id)
            print(f"{device_id}: {len(received)} samples, first {received[0]:+.3f}")
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    main()
