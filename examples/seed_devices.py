"""The five streaming device classes of the "Advanced Streaming" guide, as users write them.

labd runs these unchanged: they use the injected ``self._ld_lock``, their own
threads and plain callbacks. The guide leaves out some methods (how a sample is
acquired, and the streaming trio of two classes); those are added here in the
guide's own style and marked "Added:". Everything else is the guide's code.

See ``seed_rebuilt.py`` for the same behaviours built on ``labd.streaming``.
"""

# The guide's code keeps its own layout.
# fmt: off

import math
import queue
import threading
import time

import pyvisa


class ThreadSafeStreamingDevice:
    def __init__(self, device_id: str, **kwargs):
        self.device_id = device_id
        self._streaming_thread = None
        self._stop_event = threading.Event()
        self._callback = None
        self._latest_data = None

    # Added: the guide does not show how this device starts and stops.
    def start_streaming(self, callback, **kwargs):
        self._callback = callback
        self._stop_event.clear()
        self._streaming_thread = threading.Thread(
            target=self._streaming_loop,
            daemon=True
        )
        self._streaming_thread.start()

    # Added.
    def stop_streaming(self, timeout=None):
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)

    # Added.
    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    # Added: a slow sine stands in for the instrument.
    def _acquire_sample(self):
        return math.sin(2 * math.pi * 0.5 * time.time())

    def _streaming_loop(self):
        while not self._stop_event.is_set():
            data = self._acquire_sample()

            # Protect shared state
            with self._ld_lock:
                self._latest_data = data

            # Callback runs outside lock
            if self._callback:
                self._callback(data)

            time.sleep(0.01)

    def get_latest_data(self):
        """Public method - automatically locked by framework."""
        return self._latest_data


class RateLimitedStreamingDevice:
    def __init__(self, device_id: str, **kwargs):
        self.device_id = device_id
        self._streaming_thread = None
        self._stop_event = threading.Event()
        self._callback = None
        self._sample_rate = 10.0

    def start_streaming(self, callback, sample_rate: float = 10.0):
        self._sample_rate = sample_rate
        self._callback = callback
        self._stop_event.clear()
        self._streaming_thread = threading.Thread(
            target=self._streaming_loop,
            daemon=True
        )
        self._streaming_thread.start()

    def stop_streaming(self, timeout=None):
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)

    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    # Added: a slow sine stands in for the instrument.
    def _acquire_sample(self):
        return math.sin(2 * math.pi * 0.5 * time.time())

    def _streaming_loop(self):
        min_interval = 1.0 / self._sample_rate
        last_time = time.time()

        while not self._stop_event.is_set():
            current_time = time.time()
            elapsed = current_time - last_time

            if elapsed < min_interval:
                self._stop_event.wait(timeout=min_interval - elapsed)
                continue

            data = self._acquire_sample()
            if self._callback:
                self._callback(data)

            last_time = time.time()


class VISAStreamingDevice:
    def __init__(self, device_id: str, address: str, query_command: str = "MEAS?", **kwargs):
        self.device_id = device_id
        self.address = address
        self.query_command = query_command
        self._instrument = None
        self._streaming_thread = None
        self._stop_event = threading.Event()
        self._callback = None

    def connect(self):
        rm = pyvisa.ResourceManager()
        self._instrument = rm.open_resource(self.address)
        self._instrument.timeout = 5000

    def disconnect(self):
        if self.is_streaming():
            self.stop_streaming()
        if self._instrument:
            self._instrument.close()

    def start_streaming(self, callback, sample_rate: float = 10.0):
        if not self._instrument:
            raise RuntimeError("Device not connected")

        self._callback = callback
        self._stop_event.clear()
        self._streaming_thread = threading.Thread(
            target=self._streaming_loop,
            args=(sample_rate,),
            daemon=True
        )
        self._streaming_thread.start()

    def stop_streaming(self, timeout=None):
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)

    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    def _streaming_loop(self, sample_rate: float):
        try:
            while not self._stop_event.is_set():
                try:
                    response = self._instrument.query(self.query_command)
                    value = float(response.strip())
                    if self._callback:
                        self._callback(value)
                    self._stop_event.wait(timeout=1.0 / sample_rate)
                except pyvisa.VisaIOError as e:
                    print(f"VISA error: {e}")
                    break
        except Exception as e:
            print(f"Streaming error: {e}")


class RobustStreamingDevice:
    def __init__(self, device_id: str, **kwargs):
        self.device_id = device_id
        self._streaming_thread = None
        self._stop_event = threading.Event()
        self._callback = None
        self._error_count = 0

    # Added: the guide does not show how this device starts and stops.
    def start_streaming(self, callback, **kwargs):
        self._callback = callback
        self._stop_event.clear()
        self._streaming_thread = threading.Thread(
            target=self._streaming_loop,
            daemon=True
        )
        self._streaming_thread.start()

    # Added.
    def stop_streaming(self, timeout=None):
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)

    # Added.
    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    # Added: a slow sine stands in for the instrument.
    def _acquire_sample(self):
        return math.sin(2 * math.pi * 0.5 * time.time())

    def _streaming_loop(self):
        while not self._stop_event.is_set():
            try:
                data = self._acquire_sample()

                if self._callback:
                    try:
                        self._callback(data)
                    except Exception as e:
                        self._error_count += 1
                        print(f"Callback error (#{self._error_count}): {e}")
                        if self._error_count > 10:
                            print("Too many callback errors, stopping stream")
                            break

                time.sleep(0.01)
            except Exception as e:
                print(f"Streaming error: {e}")
                break

    def get_error_count(self) -> int:
        """Get callback error count."""
        return self._error_count


class BackpressureStreamingDevice:
    def __init__(self, device_id: str, max_queue_size: int = 100, **kwargs):
        self.device_id = device_id
        self._streaming_thread = None
        self._callback_thread = None
        self._stop_event = threading.Event()
        self._callback = None
        self._queue = queue.Queue(maxsize=max_queue_size)

    def start_streaming(self, callback, sample_rate: float = 10.0):
        self._callback = callback
        self._stop_event.clear()

        self._streaming_thread = threading.Thread(
            target=self._streaming_loop,
            args=(sample_rate,),
            daemon=True
        )
        self._streaming_thread.start()

        self._callback_thread = threading.Thread(
            target=self._callback_loop,
            daemon=True
        )
        self._callback_thread.start()

    def stop_streaming(self, timeout=None):
        self._stop_event.set()
        if self._streaming_thread:
            self._streaming_thread.join(timeout=timeout)
        if self._callback_thread:
            self._callback_thread.join(timeout=timeout)

    def is_streaming(self) -> bool:
        return self._streaming_thread is not None and self._streaming_thread.is_alive()

    # Added: a slow sine stands in for the instrument.
    def _acquire_sample(self):
        return math.sin(2 * math.pi * 0.5 * time.time())

    def _streaming_loop(self, sample_rate: float):
        """Acquire data and queue it."""
        try:
            while not self._stop_event.is_set():
                data = self._acquire_sample()

                try:
                    self._queue.put(data, timeout=1.0 / sample_rate)
                except queue.Full:
                    print("Data queue full, dropping sample")

                self._stop_event.wait(timeout=0.001)
        except Exception as e:
            print(f"Streaming error: {e}")

    def _callback_loop(self):
        """Process queued data in separate thread."""
        try:
            while not self._stop_event.is_set():
                try:
                    data = self._queue.get(timeout=0.1)
                    if self._callback:
                        self._callback(data)
                except queue.Empty:
                    continue
        except Exception as e:
            print(f"Callback error: {e}")
