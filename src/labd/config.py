"""Lab configuration files: a TOML lab description or a Python ``setup(daemon)`` file.

``LabConfig.load(path)`` parses and validates a file without touching any instrument;
``LabConfig.build(daemon)`` then registers the task types, adds the devices, connects
them and returns the server options. Every problem is a :class:`ConfigError` whose message
is one line naming the file, the entry and the problem, for example
``lab.toml: devices[1] (laser1): bad params: got an unexpected keyword argument 'nm'``.

The TOML form::

    [server]                          # optional; command-line flags override
    host = "127.0.0.1"
    port = 5000
    tokens = { "change-me" = "operator" }
    call_timeout = 30.0
    [[devices]]
    id = "laser1"
    type = "labd.sim:TunableLaser"    # module:Class
    connect = true                    # default true
    params = { wavelength_nm = 1550.0 }
    [tasks]
    sweep = "labd.sim:WavelengthSweep"
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import math
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labd.daemon import LabDaemon
from labd.devices import accepts_keyword
from labd.exceptions import ConfigError, LabStartError, error_text
from labd.wire import ROLES

__all__ = [
    "ROLES",
    "ConfigError",
    "DeviceEntry",
    "LabConfig",
    "LabStartError",
    "ServerOptions",
    "import_class",
]

log = logging.getLogger(__name__)


_TOP_KEYS = ("server", "devices", "tasks")
_DEVICE_KEYS = ("id", "type", "connect", "params")


@dataclass(frozen=True)
class ServerOptions:
    """Server settings from a configuration; ``None`` means "not given, use the default"."""

    host: str | None = None
    port: int | None = None
    tokens: dict[str, str] | None = None
    call_timeout: float | None = None
    heartbeat_interval: float | None = None
    allow_remote_without_auth: bool | None = None
    cors_origins: tuple[str, ...] | None = None
    allowed_hosts: tuple[str, ...] | None = None
    max_streams_per_client: int | None = None

    def merged(self, **overrides: Any) -> ServerOptions:
        """A copy where every override that is not ``None`` replaces the configured value."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **given)

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``LabDaemonServer`` (only the options that were set)."""
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class DeviceEntry:
    """One ``[[devices]]`` table, validated: its class is imported and its params bind."""

    index: int
    id: str
    target: str
    cls: type
    connect: bool = True
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How error messages name this entry: ``devices[1] (laser1)``."""
        return f"devices[{self.index}] ({self.id})"


@dataclass
class LabConfig:
    """A parsed, validated lab: server options, devices and task types, or a setup function."""

    path: Path
    server: ServerOptions = field(default_factory=ServerOptions)
    devices: list[DeviceEntry] = field(default_factory=list)
    tasks: dict[str, type] = field(default_factory=dict)
    setup: Callable[[LabDaemon], object] | None = None

    @classmethod
    def load(cls, path: str | Path) -> LabConfig:
        """Read ``path``: a ``.toml`` lab file or a ``.py`` file defining ``setup(daemon)``."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, None, "no such file")
        if path.suffix == ".py":
            return cls.from_python(path)
        if path.suffix == ".toml":
            return cls.from_toml(path)
        raise ConfigError(path, None, "expected a .toml lab file or a .py file with setup(daemon)")

    @classmethod
    def from_toml(cls, path: str | Path) -> LabConfig:
        """Parse and validate a TOML lab file; imports the classes it names."""
        path = Path(path)
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, None, f"invalid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from exc
        return cls.from_dict(document, path)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], path: str | Path = "<config>") -> LabConfig:
        """Validate an already parsed lab description (the TOML document's shape)."""
        path = Path(path)
        _check_keys(path, "top level", document, _TOP_KEYS, kind="top-level key")
        server = document.get("server", {})
        if not isinstance(server, dict):
            raise ConfigError(path, "server", f"must be a table, not {_kind(server)}")
        config = cls(path=path, server=parse_server_options(path, "server", server))
        with _importable_from(path.parent):
            config.tasks = _parse_tasks(path, document.get("tasks", {}))
            config.devices = _parse_devices(path, document.get("devices", []))
        return config

    @classmethod
    def from_python(cls, path: str | Path) -> LabConfig:
        """Load a Python file that defines ``setup(daemon)``; nothing runs but its module code."""
        path = Path(path)
        name = f"labd_lab_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(path, None, "cannot load as a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            with _importable_from(path.parent):
                spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise ConfigError(path, f"line {exc.lineno}", f"SyntaxError: {exc.msg}") from exc
        except Exception as exc:
            raise ConfigError(path, None, f"loading failed: {error_text(exc)}") from exc
        setup = getattr(module, "setup", None)
        if not callable(setup):
            raise ConfigError(path, None, "defines no setup(daemon) function")
        return cls(path=path, setup=setup)

    def build(self, daemon: LabDaemon) -> ServerOptions:
        """Set the lab up on ``daemon``; returns the server options (from the file or setup()).

        Raises :class:`ConfigError` for a device or setup that fails, and
        :class:`LabStartError` for a device whose ``connect()`` fails.
        """
        if self.setup is not None:
            return self._run_setup(daemon)
        try:
            daemon.register_plugins(tasks=self.tasks)
        except (TypeError, ValueError) as exc:
            raise ConfigError(self.path, "tasks", str(exc)) from exc
        for entry in self.devices:
            try:
                daemon.add_device(entry.id, entry.cls, **entry.params)
            except Exception as exc:
                raise ConfigError(self.path, entry.label, error_text(exc)) from exc
            self._register_type(daemon, entry)
            if entry.connect:
                try:
                    daemon.connect_device(entry.id)
                except Exception as exc:
                    cause = exc.__cause__ if exc.__cause__ is not None else exc
                    raise LabStartError(
                        self.path, entry.label, f"connect failed: {error_text(cause)}"
                    ) from exc
            log.info("lab %s: added %s (%s)", self.path, entry.id, entry.target)
        return self.server

    def _register_type(self, daemon: LabDaemon, entry: DeviceEntry) -> None:
        # Registering the class under its own name lets HTTP clients add more of the same
        # kind; a different class already holding that name keeps it.
        try:
            daemon.register_plugins(devices={entry.cls.__name__: entry.cls})
        except ValueError:
            log.info(
                "device type name %s is taken; not registering %s", entry.cls.__name__, entry.target
            )

    def _run_setup(self, daemon: LabDaemon) -> ServerOptions:
        assert self.setup is not None
        try:
            with _importable_from(self.path.parent):
                returned = self.setup(daemon)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(self.path, "setup()", f"raised {error_text(exc)}") from exc
        if returned is None:
            return ServerOptions()
        if not isinstance(returned, dict):
            raise ConfigError(
                self.path,
                "setup()",
                f"must return None or a dict of server options, not {_kind(returned)}",
            )
        self.server = parse_server_options(self.path, "setup() return value", returned)
        return self.server


def _parse_origins(path: Path, entry: str, value: Any) -> list[str]:
    """A list of ``scheme://host[:port]`` origins (or ``"*"``), as browsers send them."""
    if not isinstance(value, list):
        raise ConfigError(path, entry, f"must be a list of origins, not {_kind(value)}")
    for origin in value:
        ok = isinstance(origin, str) and (
            origin == "*" or (origin.split("://", 1)[0] in ("http", "https") and "://" in origin)
        )
        if not ok or origin.rstrip("/").count("/") > 2:
            raise ConfigError(
                path, entry, f"{origin!r} is not an origin like 'https://lab.example.org'"
            )
    return [origin.rstrip("/") for origin in value]


def parse_server_options(path: Path, entry: str, table: Mapping[str, Any]) -> ServerOptions:
    """Validate a ``[server]`` table (or the dict a setup() returns)."""
    keys = tuple(f.name for f in ServerOptions.__dataclass_fields__.values())
    _check_keys(path, entry, table, keys)
    host = table.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(path, f"{entry}.host", f"must be a non-empty string, not {_kind(host)}")
    port = table.get("port")
    if port is not None and (not _is_int(port) or not 0 <= port <= 65535):
        raise ConfigError(path, f"{entry}.port", f"must be an integer 0-65535, not {port!r}")
    tokens = table.get("tokens")
    if tokens is not None:
        tokens = _parse_tokens(path, f"{entry}.tokens", tokens)
    numbers = {}
    for key in ("call_timeout", "heartbeat_interval"):
        value = table.get(key)
        if value is not None:
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ConfigError(
                    path, f"{entry}.{key}", f"must be a positive number of seconds, not {value!r}"
                )
            numbers[key] = float(value)
    allow = table.get("allow_remote_without_auth")
    if allow is not None and not isinstance(allow, bool):
        raise ConfigError(
            path, f"{entry}.allow_remote_without_auth", f"must be true or false, not {allow!r}"
        )
    origins = table.get("cors_origins")
    if origins is not None:
        origins = tuple(_parse_origins(path, f"{entry}.cors_origins", origins))
    hosts = table.get("allowed_hosts")
    if hosts is not None:
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise ConfigError(
                path, f"{entry}.allowed_hosts", f"must be a list of host names, not {hosts!r}"
            )
        hosts = tuple(hosts)
    limit = table.get("max_streams_per_client")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(
            path, f"{entry}.max_streams_per_client", f"must be an integer >= 1, not {limit!r}"
        )
    return ServerOptions(
        host=host,
        port=port,
        tokens=tokens,
        allow_remote_without_auth=allow,
        cors_origins=origins,
        allowed_hosts=hosts,
        max_streams_per_client=limit,
        **numbers,
    )


def _parse_tokens(path: Path, entry: str, tokens: Any) -> dict[str, str]:
    if not isinstance(tokens, dict):
        raise ConfigError(path, entry, f"must be a table of token = role, not {_kind(tokens)}")
    for secret, role in tokens.items():
        if not secret:
            raise ConfigError(path, entry, "a token must not be empty")
        if role not in ROLES:
            # Never echo the secret itself: config errors end up in logs.
            raise ConfigError(path, entry, f"role {role!r} is not one of {', '.join(ROLES)}")
    return dict(tokens)


def _parse_tasks(path: Path, tasks: Any) -> dict[str, type]:
    if not isinstance(tasks, dict):
        raise ConfigError(
            path, "tasks", f'must be a table of name = "module:Class", not {_kind(tasks)}'
        )
    parsed: dict[str, type] = {}
    for name, target in tasks.items():
        entry = f"tasks.{name}"
        if not isinstance(target, str):
            raise ConfigError(path, entry, f'must be a "module:Class" string, not {_kind(target)}')
        cls = _import(path, entry, target)
        if not callable(getattr(cls, "run", None)):
            raise ConfigError(path, entry, f"{target} has no run(context) method")
        parsed[name] = cls
    return parsed


def _parse_devices(path: Path, devices: Any) -> list[DeviceEntry]:
    if not isinstance(devices, list):
        raise ConfigError(
            path, "devices", f"must be an array of tables ([[devices]]), not {_kind(devices)}"
        )
    entries: list[DeviceEntry] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(devices):
        label = f"devices[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(path, label, f"must be a table, not {_kind(table)}")
        device_id = table.get("id")
        if isinstance(device_id, str) and device_id:
            label = f"{label} ({device_id})"
        _check_keys(path, label, table, _DEVICE_KEYS)
        if not isinstance(device_id, str) or not device_id:
            problem = "missing 'id'" if device_id is None else "'id' must be a non-empty string"
            raise ConfigError(path, label, problem)
        if device_id in seen:
            raise ConfigError(
                path, label, f"duplicate id {device_id!r} (also devices[{seen[device_id]}])"
            )
        seen[device_id] = index
        target = table.get("type")
        if target is None:
            raise ConfigError(path, label, "missing 'type' (\"module:Class\")")
        if not isinstance(target, str):
            raise ConfigError(
                path, label, f"'type' must be a \"module:Class\" string, not {_kind(target)}"
            )
        connect = table.get("connect", True)
        if not isinstance(connect, bool):
            raise ConfigError(path, label, f"'connect' must be true or false, not {connect!r}")
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(path, label, f"'params' must be a table, not {_kind(params)}")
        cls = _import(path, label, target)
        _check_params(path, label, cls, device_id, params)
        entries.append(DeviceEntry(index, device_id, target, cls, connect, dict(params)))
    return entries


def _check_params(
    path: Path, label: str, cls: type, device_id: str, params: dict[str, Any]
) -> None:
    """Bind ``params`` to ``cls.__init__`` the way the daemon will, without constructing it."""
    kwargs = dict(params)
    explicit = kwargs.pop("device_id", device_id)
    if explicit != device_id:
        raise ConfigError(
            path, label, f"bad params: device_id={explicit!r} does not match id {device_id!r}"
        )
    if accepts_keyword(cls, "device_id"):
        kwargs["device_id"] = device_id
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = [
            name
            for name, p in signature.parameters.items()
            if name != "device_id" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        hint = f" (accepted: {', '.join(accepted)})" if accepted else ""
        raise ConfigError(path, label, f"bad params: {exc}{hint}") from exc


def import_class(target: str) -> type:
    """Import ``"package.module:Class"`` (``Class`` may be dotted).

    Raises ``ValueError`` for a malformed target, ``ImportError`` and ``TypeError`` otherwise.
    """
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f'{target!r} is not of the form "module:Class"')
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, type):
        raise TypeError(f"{target} is {_kind(obj)}, not a class")
    return obj


def _import(path: Path, entry: str, target: str) -> type:
    try:
        return import_class(target)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            path, entry, f"cannot import {target!r}: no module named {exc.name!r}"
        ) from exc
    except (ImportError, TypeError, ValueError) as exc:
        raise ConfigError(path, entry, str(exc)) from exc
    except Exception as exc:
        raise ConfigError(path, entry, f"importing {target!r} raised {error_text(exc)}") from exc


def _check_keys(
    path: Path, entry: str, table: Mapping[str, Any], allowed: tuple[str, ...], kind: str = "key"
) -> None:
    unknown = [key for key in table if key not in allowed]
    if unknown:
        raise ConfigError(
            path,
            entry,
            f"unknown {kind} {unknown[0]!r} (expected one of: {', '.join(allowed)})",
        )


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """Let a lab file import modules that sit next to it, for the duration of loading."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    names = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), f"{type(value).__name__} {value!r}")
