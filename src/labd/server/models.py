"""Request bodies: their validation and their OpenAPI description.

Responses are described by the TypedDicts of :mod:`labd.wire`, the shapes shared with
the clients; they are encoded with orjson directly.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AddDeviceRequest",
    "CallRequest",
    "ParameterRequest",
    "StartStreamingRequest",
    "StartTaskRequest",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AddDeviceRequest(_Request):
    device_id: str = Field(min_length=1)
    device_type: str = Field(min_length=1, description="a registered device type name")
    params: dict[str, Any] = Field(default_factory=dict)


class CallRequest(_Request):
    """One device call; strict (``"timeout": "1.5"`` is refused), as the call fast path uses it."""

    model_config = ConfigDict(extra="ignore", strict=True)

    method: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(
        default=None, gt=0, description="seconds; server default if absent"
    )


class StartStreamingRequest(_Request):
    kwargs: dict[str, Any] = Field(default_factory=dict)


class StartTaskRequest(_Request):
    task_id: str = Field(min_length=1)
    task_type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ParameterRequest(_Request):
    key: str = Field(min_length=1)
    value: Any = Field(description="required; null is a value like any other")
