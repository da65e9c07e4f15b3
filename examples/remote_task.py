"""Run a task written for a local daemon against a remote labd server, unchanged.

``WavelengthSweep.run(context)`` only calls ``context.daemon.get_device(...)`` and the
devices' public methods. ``api.daemon()`` gives a remote daemon whose ``get_device``
returns proxies, so the same task class drives the server's instruments over HTTP.

For a self-contained example this script starts the "lab PC" side in-process: a daemon
with the simulated lab, served on a free loopback port. Against a real lab you would
only keep the client half and point ``ServerAPI`` at the lab's URL.

.venv/bin/python examples/remote_task.py
"""

import labd as ld
from labd.server import LabDaemonServer, ServerAPI
from labd.sim import WavelengthSweep, setup_demo


def main():
    lab = ld.LabDaemon()
    setup_demo(lab)
    server = LabDaemonServer(lab, port=0)
    server.start()
    try:
        with ServerAPI(server.url) as api:
            remote = api.daemon()
            print("remote devices:", ", ".join(remote.list_devices()))

            # 1. The task class runs here; every device call goes to the server.
            result = remote.run_task(
                WavelengthSweep,
                "sweep-here",
                start_nm=1549.0,
                stop_nm=1551.0,
                step_nm=0.25,
                dwell_s=0.001,
            )
            dip = min(result["transmission"])
            print(f"ran here: {len(result['power_mw'])} points, deepest transmission {dip:.2f}")

            # 2. Or the server runs a registered task type, and we follow its handle.
            handle = remote.execute_task(
                "sweep-there", "sweep", start_nm=1549.0, stop_nm=1551.0, step_nm=0.25, dwell_s=0.001
            )
            result = handle.wait(timeout=30)
            print(f"ran on the server: {handle.status}, {len(result['power_mw'])} points")
    finally:
        server.stop()
        lab.shutdown()


if __name__ == "__main__":
    main()
