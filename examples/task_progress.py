"""A task that reports its progress while another thread watches its handle.

.venv/bin/python examples/task_progress.py
"""

import threading

import labd as ld


class Countdown:
    """Counts down from ``start``, one step every ``interval_s`` seconds."""

    def __init__(self, task_id, start=10, interval_s=0.05):
        self.task_id = task_id
        self.start = start
        self.interval_s = interval_s

    def run(self, context):
        for i in range(self.start, 0, -1):
            # Pause checkpoint and a cancel-aware wait in one place each.
            while not context.resume_event.wait(0.1):
                if context.cancel_event.is_set():
                    return i
            if context.cancel_event.wait(self.interval_s):
                return i
            done = self.start - i + 1
            context.report(progress=done / self.start, message=f"{i - 1} to go", remaining=i - 1)
        return "lift-off"


def watch(handle, finished):
    """Print each new progress value until the task ends."""
    last = None
    while handle.is_running():
        if handle.progress != last:
            last = handle.progress
            print(f"[watcher] {handle.task_id}: {last or 0:.0%} {handle.message or ''}")
        finished.wait(0.01)
    print(f"[watcher] {handle.task_id} ended: {handle.status} at {handle.progress or 0:.0%}")


def main():
    daemon = ld.LabDaemon()
    try:
        handle = daemon.execute_task("countdown", Countdown, start=10)
        finished = threading.Event()
        watcher = threading.Thread(target=watch, args=(handle, finished), name="watcher")
        watcher.start()
        result = handle.wait(timeout=30.0)
        finished.set()
        watcher.join(timeout=5.0)
        print(f"result: {result}")
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    main()
