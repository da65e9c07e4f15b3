"""Device endpoints: listing, adding, connecting, calling, errors and stream control."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labd.server.calls import DeviceCaller
from labd.server.context import ServerContext, json_response
from labd.server.errors import ApiError, documented_errors, recorded_error_response, status_for
from labd.server.models import AddDeviceRequest, CallRequest, StartStreamingRequest
from labd.wire import CallResult, DeviceInfo, DeviceList, MethodList

__all__ = ["device_routes"]


def device_routes(ctx: ServerContext, caller: DeviceCaller) -> APIRouter:
    router = APIRouter(tags=["devices"])
    daemon = ctx.daemon

    known = ctx.check_device

    async def device_action(device_id: str, action: str, func: Any, *args: Any) -> None:
        known(device_id)
        ctx.ensure_not_owned(device_id, action)
        try:
            await ctx.bridge.run(func, device_id, *args)
        except Exception as exc:
            raise _as_api_error(exc, {"device_id": device_id, "action": action}) from None

    @router.get("/devices", response_model=DeviceList)
    async def list_devices(request: Request) -> Response:
        infos = []
        for device_id in daemon.list_devices():
            try:
                infos.append(daemon.device_info(device_id))
            except ValueError:
                continue  # removed meanwhile
        return json_response({"devices": infos})

    @router.post(
        "/devices",
        status_code=201,
        response_model=DeviceInfo,
        responses=documented_errors(400, 404, 409),
    )
    async def add_device(request: Request, body: AddDeviceRequest) -> Response:
        if body.device_type not in daemon.device_types():
            raise ApiError(
                404,
                f"unknown device type {body.device_type!r}",
                type_name="UnknownDeviceTypeError",
                context={"device_type": body.device_type},
            )
        try:
            await ctx.bridge.run(daemon.add_device, body.device_id, body.device_type, **body.params)
        except Exception as exc:
            raise _as_api_error(exc, {"device_id": body.device_id}, default=400) from None
        return json_response(daemon.device_info(body.device_id), 201)

    @router.get("/devices/{device_id}", response_model=DeviceInfo, responses=documented_errors(404))
    async def get_device(request: Request, device_id: str) -> Response:
        known(device_id)
        return json_response(daemon.device_info(device_id))

    @router.get(
        "/devices/{device_id}/methods", response_model=MethodList, responses=documented_errors(404)
    )
    async def get_methods(request: Request, device_id: str) -> Response:
        known(device_id)
        return json_response({"methods": daemon.device_methods(device_id)})

    @router.post(
        "/devices/{device_id}/connect",
        response_model=DeviceInfo,
        responses=documented_errors(404, 409, 500, 504),
    )
    async def connect(request: Request, device_id: str) -> Response:
        await device_action(device_id, "connect", daemon.connect_device, ctx.call_timeout)
        return json_response(daemon.device_info(device_id))

    @router.post(
        "/devices/{device_id}/disconnect",
        response_model=DeviceInfo,
        responses=documented_errors(404, 409, 500, 504),
    )
    async def disconnect(request: Request, device_id: str) -> Response:
        await device_action(device_id, "disconnect", daemon.disconnect_device, ctx.call_timeout)
        return json_response(daemon.device_info(device_id))

    @router.delete("/devices/{device_id}", status_code=204, responses=documented_errors(404, 409))
    async def remove(request: Request, device_id: str) -> Response:
        await device_action(device_id, "remove", daemon.remove_device, ctx.call_timeout)
        return Response(status_code=204)

    @router.post(
        "/devices/{device_id}/call",
        response_model=CallResult,
        responses=documented_errors(400, 404, 409, 500, 504),
    )
    async def call(request: Request, device_id: str, body: CallRequest) -> Response:
        reply = await caller.perform(
            request.scope, device_id, body.method, body.args, body.kwargs, body.timeout
        )
        return Response(reply, media_type="application/json")

    @router.get("/devices/{device_id}/error", responses=documented_errors(404))
    async def get_error(request: Request, device_id: str) -> Response:
        known(device_id)
        return recorded_error_response(daemon.get_last_error(device_id), "device", device_id)

    @router.delete("/devices/{device_id}/error", status_code=204, responses=documented_errors(404))
    async def clear_error(request: Request, device_id: str) -> Response:
        known(device_id)
        daemon.clear_last_error(device_id)
        return Response(status_code=204)

    @router.post(
        "/devices/{device_id}/streaming/start",
        response_model=DeviceInfo,
        responses=documented_errors(400, 404, 409, 500, 504),
    )
    async def start_streaming(
        request: Request, device_id: str, body: StartStreamingRequest | None = None
    ) -> Response:
        ctx.check_stream(device_id)
        ctx.ensure_not_owned(device_id, "start streaming")
        kwargs = body.kwargs if body is not None else {}
        try:
            start = daemon.prepare_stream_start(device_id, kwargs, explicit=True)
            await ctx.bridge.call(start, ctx.call_timeout)
        except Exception as exc:
            raise _as_api_error(
                exc, {"device_id": device_id, "action": "start streaming"}
            ) from None
        return json_response(daemon.device_info(device_id))

    @router.post(
        "/devices/{device_id}/streaming/stop",
        response_model=DeviceInfo,
        responses=documented_errors(404, 409, 500),
    )
    async def stop_streaming(request: Request, device_id: str) -> Response:
        ctx.check_stream(device_id)
        ctx.ensure_not_owned(device_id, "stop streaming")
        try:
            await ctx.bridge.run(daemon.stop_streaming, device_id, min(ctx.call_timeout, 10.0))
        except Exception as exc:
            raise _as_api_error(exc, {"device_id": device_id, "action": "stop streaming"}) from None
        return json_response(daemon.device_info(device_id))

    return router


def _as_api_error(exc: Exception, context: dict[str, Any], default: int = 500) -> ApiError:
    """Map an exception from the daemon to an answer: framework ones by type, device ones to 500."""
    status = status_for(exc)
    if isinstance(exc, ApiError):
        return exc
    if status is not None:
        return ApiError(status, str(exc), type_name=type(exc).__name__, context=context)
    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    if default != 500:
        return ApiError(default, str(exc), type_name=type(exc).__name__, context=context)
    return ApiError(
        500, str(exc), origin="device", type_name=type(cause).__name__, context=context, cause=cause
    )
