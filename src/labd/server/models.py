"""Request and response models: validation of bodies and the OpenAPI description.

Responses are encoded with orjson directly; the response models document their shape
(they mirror the TypedDicts of :mod:`labd.wire`, which is what is actually sent).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AddDeviceRequest",
    "CallRequest",
    "CallResponse",
    "DeviceInfoModel",
    "DeviceListModel",
    "ErrorBody",
    "ErrorModel",
    "HealthModel",
    "MethodListModel",
    "ParameterRequest",
    "ParameterResponse",
    "StartStreamingRequest",
    "StartTaskRequest",
    "StartTaskResponse",
    "TaskInfoModel",
    "TaskListModel",
    "TaskTypeListModel",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AddDeviceRequest(_Request):
    device_id: str = Field(min_length=1)
    device_type: str = Field(min_length=1, description="a registered device type name")
    params: dict[str, Any] = Field(default_factory=dict)


class CallRequest(_Request):
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
    value: Any = None


class ErrorModel(BaseModel):
    type: str
    message: str
    origin: Literal["framework", "device", "callback", "task"]
    timestamp: str
    traceback: str | None
    context: dict[str, Any]


class ErrorBody(BaseModel):
    error: ErrorModel


class HealthModel(BaseModel):
    status: str
    timestamp: str


class DeviceInfoModel(BaseModel):
    device_id: str
    device_type: str
    connected: bool
    streaming: bool
    owned_by: str | None
    last_error: ErrorModel | None


class DeviceListModel(BaseModel):
    devices: list[DeviceInfoModel]


class ParameterModel(BaseModel):
    name: str
    kind: str
    required: bool
    default: Any
    annotation: str | None


class MethodModel(BaseModel):
    name: str
    parameters: list[ParameterModel]
    returns: str | None
    doc: str | None
    query: bool


class MethodListModel(BaseModel):
    methods: list[MethodModel]


class CallResponse(BaseModel):
    result: Any
    success: bool


class TaskInfoModel(BaseModel):
    task_id: str
    task_type: str
    device_ids: list[str]
    status: str
    running: bool
    paused: bool
    progress: float | None
    message: str | None
    result: Any
    exception: ErrorModel | None
    started_at: str | None
    finished_at: str | None


class TaskListModel(BaseModel):
    tasks: list[TaskInfoModel]


class StartTaskResponse(BaseModel):
    task_id: str
    device_ids: list[str]
    status: str


class TaskTypeModel(BaseModel):
    name: str
    parameters: list[ParameterModel]
    doc: str | None


class TaskTypeListModel(BaseModel):
    task_types: list[TaskTypeModel]


class ParameterResponse(BaseModel):
    key: str
    value: Any
