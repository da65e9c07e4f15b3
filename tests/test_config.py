"""Lab configuration files: parsing, validation messages and building a lab on a daemon."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from labd import LabDaemon
from labd.config import ConfigError, LabConfig, LabStartError, ServerOptions, import_class
from labd.sim import TunableLaser, WavelengthSweep

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab.toml"


def write(tmp_path: Path, text: str, name: str = "lab.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        LabConfig.load(path)
    return caught.value


def assert_one_line(error: ConfigError, path: Path, *parts: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert text.startswith(str(path))
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"
    assert error.exit_code == 2


LASER = """
[[devices]]
id = "laser0"
type = "labd.sim:TunableLaser"
"""


# ---- the example file --------------------------------------------------------------------


def test_example_lab_parses() -> None:
    config = LabConfig.load(EXAMPLE)
    assert [d.id for d in config.devices] == ["laser1", "meter1", "daq1", "camera1"]
    assert config.devices[0].cls is TunableLaser
    assert config.devices[0].params == {"wavelength_nm": 1550.0, "power_mw": 1.0}
    assert all(d.connect for d in config.devices)
    assert config.tasks == {"sweep": WavelengthSweep}
    assert config.server == ServerOptions(host="127.0.0.1", port=5000, call_timeout=30.0)


def test_example_lab_builds(daemon: LabDaemon) -> None:
    options = LabConfig.load(EXAMPLE).build(daemon)
    assert options.port == 5000
    assert daemon.list_devices() == ["laser1", "meter1", "daq1", "camera1"]
    assert all(daemon.device_info(d)["connected"] for d in daemon.list_devices())
    assert daemon.get_device("laser1").get_wavelength() == 1550.0
    assert daemon.task_types() == {"sweep": WavelengthSweep}
    # Classes are registered under their names so HTTP clients can add more of them.
    assert daemon.device_types()["TunableLaser"] is TunableLaser
    handle = daemon.execute_task("s", "sweep", start_nm=1549.0, stop_nm=1551.0, step_nm=1.0)
    assert handle.wait(timeout=30)["wavelength_nm"] == [1549.0, 1550.0, 1551.0]


def test_connect_false_leaves_device_disconnected(tmp_path: Path, daemon: LabDaemon) -> None:
    path = write(tmp_path, LASER + "connect = false\n")
    LabConfig.load(path).build(daemon)
    assert daemon.device_info("laser0")["connected"] is False


def test_server_options_merge_and_kwargs() -> None:
    base = ServerOptions(host="127.0.0.1", port=5000, tokens={"a": "viewer"})
    merged = base.merged(port=0, host=None, tokens=None)
    assert merged.port == 0 and merged.host == "127.0.0.1" and merged.tokens == {"a": "viewer"}
    assert merged.server_kwargs() == {"host": "127.0.0.1", "port": 0, "tokens": {"a": "viewer"}}


def test_server_table_all_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "localhost"
        port = 0
        tokens = { "s1" = "viewer", "s2" = "admin" }
        call_timeout = 5
        heartbeat_interval = 0.5
        allow_remote_without_auth = false
        """,
    )
    server = LabConfig.load(path).server
    assert server == ServerOptions(
        host="localhost",
        port=0,
        tokens={"s1": "viewer", "s2": "admin"},
        call_timeout=5.0,
        heartbeat_interval=0.5,
        allow_remote_without_auth=False,
    )


# ---- one-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("[device]\nid = 'x'\n", ["top level", "unknown top-level key 'device'", "devices"]),
        ("[server]\nprot = 5000\n", ["server", "unknown key 'prot'", "port"]),
        ("[server]\nport = '5000'\n", ["server.port", "integer"]),
        ("[server]\nport = 70000\n", ["server.port", "70000"]),
        ("[server]\ncall_timeout = -1\n", ["server.call_timeout", "positive"]),
        ("[server]\ntokens = { 's3cret' = 'root' }\n", ["server.tokens", "'root'", "viewer"]),
        ("[server]\nallow_remote_without_auth = 1\n", ["allow_remote_without_auth", "true"]),
        ("server = 5\n", ["server", "must be a table"]),
        ("devices = 5\n", ["devices", "array of tables"]),
        ("[devices]\nid = 'x'\n", ["devices", "array of tables"]),
        (LASER + "colour = 'red'\n", ["devices[0] (laser0)", "unknown key 'colour'"]),
        (LASER + "connect = 'yes'\n", ["devices[0] (laser0)", "'connect'", "true or false"]),
        (LASER + "params = [1]\n", ["devices[0] (laser0)", "'params' must be a table"]),
        ("[[devices]]\ntype = 'labd.sim:Camera'\n", ["devices[0]", "missing 'id'"]),
        ("[[devices]]\nid = 3\ntype = 'labd.sim:Camera'\n", ["devices[0]", "non-empty string"]),
        ("[[devices]]\nid = 'c'\n", ["devices[0] (c)", "missing 'type'"]),
        (
            "[[devices]]\nid = 'c'\ntype = 'labd.sim.Camera'\n",
            ["devices[0] (c)", "module:Class"],
        ),
        (
            "[[devices]]\nid = 'c'\ntype = 'labd.nowhere:Camera'\n",
            ["devices[0] (c)", "cannot import", "'labd.nowhere'"],
        ),
        (
            "[[devices]]\nid = 'c'\ntype = 'labd.sim:Kamera'\n",
            ["devices[0] (c)", "no attribute 'Kamera'"],
        ),
        (
            "[[devices]]\nid = 'c'\ntype = 'labd.sim:setup_demo'\n",
            ["devices[0] (c)", "not a class"],
        ),
        (
            LASER + "params = { wavelenth_nm = 1550.0 }\n",
            ["devices[0] (laser0)", "bad params", "wavelenth_nm", "accepted: wavelength_nm"],
        ),
        (
            LASER + "params = { device_id = 'other' }\n",
            ["devices[0] (laser0)", "bad params", "'other'"],
        ),
        (
            LASER + LASER.replace("laser0", "laser1") + LASER,
            ["devices[2] (laser0)", "duplicate id 'laser0'", "devices[0]"],
        ),
        ("[tasks]\nsweep = 5\n", ["tasks.sweep", "module:Class"]),
        ("[tasks]\nsweep = 'labd.sim:TunableLaser'\n", ["tasks.sweep", "no run(context)"]),
        ("tasks = 'x'\n", ["tasks", "must be a table"]),
        ("[[devices]\nid = 'x'\n", ["invalid TOML", "line 1"]),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, parts: list[str]) -> None:
    path = write(tmp_path, text)
    assert_one_line(config_error(path), path, *parts)


def test_token_secret_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\ntokens = { 'top-s3cret' = 'boss' }\n")
    assert "top-s3cret" not in str(config_error(path))


def test_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_one_line(config_error(missing), missing, "no such file")
    other = write(tmp_path, "x", name="lab.yaml")
    assert_one_line(config_error(other), other, ".toml", ".py")


def test_device_constructor_error_names_entry(tmp_path: Path, daemon: LabDaemon) -> None:
    path = write(
        tmp_path,
        "[[devices]]\nid = 'daq0'\ntype = 'labd.sim:StreamingDAQ'\nparams = { channels = 0 }\n",
    )
    config = LabConfig.load(path)  # binds fine; the value is checked by the class
    with pytest.raises(ConfigError) as caught:
        config.build(daemon)
    assert_one_line(caught.value, path, "devices[0] (daq0)", "ValueError", "channels")


def test_connect_failure_is_a_start_error(tmp_path: Path, daemon: LabDaemon) -> None:
    module = f"labd_cfg_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            class Broken:
                def __init__(self, device_id):
                    self.device_id = device_id
                def connect(self):
                    raise OSError("no instrument on port COM7")
                def disconnect(self):
                    pass
            """
        )
    )
    path = write(tmp_path, f"[[devices]]\nid = 'b'\ntype = '{module}:Broken'\n")
    config = LabConfig.load(path)  # the module beside the file is importable
    with pytest.raises(LabStartError) as caught:
        config.build(daemon)
    text = str(caught.value)
    assert "devices[0] (b)" in text and "connect failed" in text and "COM7" in text
    assert "\n" not in text and caught.value.exit_code == 1


# ---- Python setup files ------------------------------------------------------------------


def test_python_setup_returning_options(tmp_path: Path, daemon: LabDaemon) -> None:
    path = write(
        tmp_path,
        """
        from labd.sim import TunableLaser

        def setup(daemon):
            daemon.add_device("laser9", TunableLaser)
            daemon.connect_device("laser9")
            return {"port": 0, "tokens": {"abc": "operator"}}
        """,
        name="lab.py",
    )
    config = LabConfig.load(path)
    assert config.setup is not None and not daemon.list_devices()  # loading runs nothing
    options = config.build(daemon)
    assert options == ServerOptions(port=0, tokens={"abc": "operator"})
    assert daemon.list_devices() == ["laser9"]


def test_python_setup_returning_none(tmp_path: Path, daemon: LabDaemon) -> None:
    path = write(tmp_path, "def setup(daemon):\n    pass\n", name="lab.py")
    assert LabConfig.load(path).build(daemon) == ServerOptions()


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("x = 1\n", ["no setup(daemon) function"]),
        ("def setup(daemon)\n    pass\n", ["line 1", "SyntaxError"]),
        ("import labd_no_such_module\n", ["loading failed", "ModuleNotFoundError"]),
    ],
)
def test_python_load_errors(tmp_path: Path, text: str, parts: list[str]) -> None:
    path = write(tmp_path, text, name="lab.py")
    assert_one_line(config_error(path), path, *parts)


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("raise RuntimeError('no bench\\nhere')", ["setup()", "RuntimeError", "no bench here"]),
        ("return 5", ["setup()", "None or a dict"]),
        ("return {'prot': 1}", ["setup() return value", "unknown key 'prot'"]),
    ],
)
def test_python_setup_errors(
    tmp_path: Path, daemon: LabDaemon, body: str, parts: list[str]
) -> None:
    path = write(tmp_path, f"def setup(daemon):\n    {body}\n", name="lab.py")
    with pytest.raises(ConfigError) as caught:
        LabConfig.load(path).build(daemon)
    assert_one_line(caught.value, path, *parts)


def test_import_class() -> None:
    assert import_class("labd.sim:TunableLaser") is TunableLaser
    assert import_class("labd.config:ConfigError") is ConfigError
    with pytest.raises(TypeError):
        import_class("labd.config:LabConfig.load")
    with pytest.raises(ValueError):
        import_class("labd.sim")
    with pytest.raises(ImportError):
        import_class("labd.sim:Nothing")
