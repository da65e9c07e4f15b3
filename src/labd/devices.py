"""How labd adapts a plain device class: construction, locking, introspection.

At ``add_device`` time labd

* builds the instance, passing ``device_id=`` only when ``__init__`` accepts it;
* injects ``device._ld_lock`` (a ``threading.RLock``);
* replaces, on the instance, every public method defined by the class (plain methods,
  classmethods and staticmethods whose names do not start with ``_``) with a wrapper
  that holds the lock for the call. Wrappers keep the name, docstring and signature.

Not wrapped, on purpose: private methods (device threads take the lock themselves, for
brief updates); properties and plain attributes (reading them stays a plain attribute
access -- put hardware I/O in methods); callables stored on the instance and methods
added after ``add_device`` (labd only knows what the class defines). The streaming trio
goes to the stream hub instead (see :mod:`labd.streams`), except when the device's own
code calls it: :func:`own_code` tells the two apart. The timed calls themselves are
:mod:`labd.calls`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable
from types import CodeType
from typing import Any, TypeVar

from labd.exceptions import DeviceBusy, DeviceConfigurationError
from labd.wire import MethodInfo, ParameterInfo

__all__ = [
    "STREAMING_METHODS",
    "DeviceBusy",
    "check_device_class",
    "choices_of",
    "describe_methods",
    "enum_parameters",
    "instantiate",
    "is_query",
    "own_code",
    "public_methods",
    "query",
    "signature_of",
    "to_enum",
    "wrap_device",
]

log = logging.getLogger(__name__)

STREAMING_METHODS = frozenset({"start_streaming", "stop_streaming", "is_streaming"})
_QUERY_PREFIXES = ("get_", "is_", "has_")

F = TypeVar("F", bound=Callable[..., Any])


def query(func: F) -> F:
    """Mark a device method as a read-only query.

    Queries are served remotely even while a task owns the device.
    """
    func.__labd_query__ = True  # type: ignore[attr-defined]
    return func


def is_query(name: str, func: Any) -> bool:
    """A query is a ``get_*``/``is_*``/``has_*`` method or one marked with :func:`query`."""
    target = inspect.unwrap(func) if callable(func) else func
    return name.startswith(_QUERY_PREFIXES) or bool(getattr(target, "__labd_query__", False))


def accepts_keyword(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return True
        if p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            return True
    return False


def instantiate(cls: type, device_id: str, params: dict[str, Any], *, kind: str = "device") -> Any:
    """Build ``cls`` with ``params``, passing the id only when ``__init__`` accepts it.

    An explicit ``device_id`` (``task_id`` for tasks) in ``params`` must equal the id.
    """
    id_name = f"{kind}_id"
    params = dict(params)
    explicit = params.pop(id_name, device_id)
    if explicit != device_id:
        raise DeviceConfigurationError(
            f"{id_name}={explicit!r} in the params does not match the id {device_id!r}"
        )
    if accepts_keyword(cls, id_name):
        params[id_name] = device_id
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:
        raise DeviceConfigurationError(
            f"bad parameters for {kind} {device_id!r} ({cls.__name__}): {exc}"
        ) from exc
    except ValueError:
        pass  # no introspectable signature: let the call itself decide
    obj = cls(**params)
    try:
        if getattr(obj, id_name, None) != device_id:
            object.__setattr__(obj, id_name, device_id)  # not through a custom __setattr__
    except AttributeError:
        log.debug("%s %r does not allow setting %s", kind, device_id, id_name)
    return obj


def public_methods(cls: type) -> list[str]:
    """Names of the public methods a class defines (functions, class- and staticmethods)."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(attr, staticmethod | classmethod) or inspect.isfunction(attr):
            names.append(name)
    return names


def check_device_class(cls: type, device_id: str) -> None:
    """Refuse, before anything is built, a class whose instances labd cannot adapt.

    Raises :class:`DeviceConfigurationError` naming the device, the class and the reason:
    instances without a ``__dict__`` (``__slots__``) cannot take ``_ld_lock`` or method
    wrappers, and ``async def`` or generator methods would run their bodies after the
    call returned, outside the device lock, and cannot be called over the network.
    """
    where = f"device {device_id!r} ({cls.__qualname__})"
    if not getattr(cls, "__dictoffset__", 1):
        raise DeviceConfigurationError(
            f"{where}: its instances have no __dict__ (the class uses __slots__), so labd"
            " cannot add _ld_lock and its method wrappers; add '__dict__' to __slots__"
        )
    for name in public_methods(cls):
        func = inspect.getattr_static(cls, name)
        if isinstance(func, staticmethod | classmethod):
            func = func.__func__
        func = inspect.unwrap(func)
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise DeviceConfigurationError(
                f"{where}: method {name!r} is 'async def'; labd runs device methods on"
                " threads under the device lock and cannot await them: make it a plain"
                " 'def' (it may use asyncio.run inside)"
            )
        if inspect.isgeneratorfunction(func):
            raise DeviceConfigurationError(
                f"{where}: method {name!r} is a generator; its body would run after the"
                " call returned, outside the device lock, and cannot be sent over the"
                " network: return a list (or make it private, '_name')"
            )


def own_code(cls: type) -> frozenset[CodeType]:
    """The code objects of every function a device class and its bases define.

    Nested functions, lambdas and comprehensions inside those methods count too, and
    decorated methods count by their ``__wrapped__`` originals. A call whose immediate
    caller runs one of these is the device's own code calling itself.
    """
    found: set[CodeType] = set()

    def add(code: CodeType) -> None:
        if code in found:
            return
        found.add(code)
        for const in code.co_consts:
            if isinstance(const, CodeType):
                add(const)

    for klass in cls.__mro__:
        if klass is object:
            continue
        for attr in vars(klass).values():
            for func in _functions_in(attr):
                add(func.__code__)
    return frozenset(found)


def _functions_in(attr: Any) -> list[Any]:
    """The plain functions behind a class attribute (method, property, decorated...)."""
    if isinstance(attr, staticmethod | classmethod):
        attr = attr.__func__
    if isinstance(attr, property):
        return [f for f in (attr.fget, attr.fset, attr.fdel) if f is not None]
    if isinstance(attr, functools.partialmethod):
        attr = attr.func
    funcs = []
    for _ in range(16):  # a __wrapped__ chain, with a bound against cycles
        if isinstance(getattr(attr, "__code__", None), CodeType):
            funcs.append(attr)
        try:
            attr = inspect.getattr_static(attr, "__wrapped__")
        except AttributeError:
            break
    return funcs


def wrap_device(obj: Any, lock: threading.RLock) -> dict[str, Callable[..., Any]]:
    """Inject ``_ld_lock`` and wrap each public method in it.

    Returns ``{name: original bound method}``. Attributes are set with
    ``object.__setattr__``: a device's own ``__setattr__`` (one that forwards settings to
    the instrument, or refuses unknown names) is for its users, not for labd's parts.
    """
    set_attribute = object.__setattr__
    set_attribute(obj, "_ld_lock", lock)
    originals: dict[str, Callable[..., Any]] = {}
    for name in public_methods(type(obj)):
        bound = getattr(obj, name)
        originals[name] = bound
        if name in STREAMING_METHODS:
            continue
        set_attribute(obj, name, _locked(bound, lock))
    return originals


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    # Bound acquire/release are measurably cheaper per call than a ``with`` block here.
    acquire = lock.acquire
    release = lock.release

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        acquire()
        try:
            return method(*args, **kwargs)
        finally:
            release()

    return call


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, enum.Enum):
        choices = choices_of(type(value)) or []
        return value.value if value.value in choices else value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """``func``'s signature with string annotations evaluated where they can be; or None."""
    try:
        return inspect.signature(func, eval_str=True)
    except (TypeError, ValueError):
        return None
    except Exception:  # an annotation that does not evaluate (NameError, ...): keep the text
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return None


def choices_of(annotation: Any) -> list[Any] | None:
    """The values a ``Literal[...]`` or ``Enum`` annotation allows (``| None`` aside), or None.

    An Enum offers its members' values when they are JSON scalars, else their names.
    """
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
        if all(v is None or isinstance(v, bool | int | float | str) for v in values):
            return values
        return [member.name for member in annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        found: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            more = choices_of(arg)
            if more is None:
                return None
            found.extend(v for v in more if v not in found)
        return found or None
    return None


def enum_parameters(sig: inspect.Signature | None) -> dict[str, type[enum.Enum]]:
    """The parameters annotated with an Enum class (``| None`` aside), by name."""
    found: dict[str, type[enum.Enum]] = {}
    for p in sig.parameters.values() if sig is not None else ():
        candidates = typing.get_args(p.annotation) or (p.annotation,)
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
                found[p.name] = candidate
                break
    return found


def to_enum(kind: type[enum.Enum], value: Any) -> Any:
    """A JSON value as a member of ``kind``: by value, else by name; TypeError if neither."""
    if isinstance(value, kind) or value is None:
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        pass
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    allowed = ", ".join(repr(v) for v in choices_of(kind) or ())
    raise TypeError(f"{value!r} is not a {kind.__name__} (one of {allowed})")


def describe_callable(name: str, func: Callable[..., Any]) -> MethodInfo:
    """Describe one callable: parameters, return annotation, docstring, query flag."""
    sig = signature_of(func) or inspect.Signature()
    params: list[ParameterInfo] = []
    for p in sig.parameters.values():
        params.append(
            {
                "name": p.name,
                "kind": p.kind.name.lower(),
                "required": p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD),
                "default": _jsonable_default(p.default),
                "annotation": _annotation_text(p.annotation),
                "choices": choices_of(p.annotation),
            }
        )
    return {
        "name": name,
        "parameters": params,
        "returns": _annotation_text(sig.return_annotation),
        "doc": inspect.getdoc(func),
        "query": is_query(name, func),
    }


def describe_methods(methods: dict[str, Callable[..., Any]]) -> list[MethodInfo]:
    """Describe each public method (from the originals recorded by :func:`wrap_device`)."""
    return [describe_callable(name, methods[name]) for name in sorted(methods)]
