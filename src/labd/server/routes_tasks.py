"""Task endpoints: task types, starting, control, live parameters and errors."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labd.exceptions import TaskError
from labd.server.context import ServerContext, json_response
from labd.server.errors import ApiError, documented_errors, recorded_error_response, status_for
from labd.server.models import ParameterRequest, StartTaskRequest
from labd.wire import ParameterValue, StartedTask, TaskInfo, TaskList, TaskTypeList

__all__ = ["task_routes"]


def task_routes(ctx: ServerContext) -> APIRouter:
    router = APIRouter(tags=["tasks"])
    daemon = ctx.daemon

    handle_of = ctx.task

    def control(task_id: str, action: str) -> Response:
        handle = handle_of(task_id)
        if not handle.is_running():
            raise ApiError(
                409,
                f"task {task_id!r} is not running ({handle.status})",
                type_name="TaskNotRunning",
                context={"task_id": task_id},
            )
        try:
            getattr(handle, action)()
        except TaskError as exc:
            raise ApiError(
                409, str(exc), type_name=type(exc).__name__, context={"task_id": task_id}
            ) from None
        return json_response(handle.info())

    @router.get("/task-types", response_model=TaskTypeList)
    async def task_types(request: Request) -> Response:
        return json_response({"task_types": daemon.task_type_infos()})

    @router.get("/tasks", response_model=TaskList)
    async def list_tasks(request: Request) -> Response:
        infos = []
        for task_id in daemon.list_tasks():
            try:
                infos.append(daemon.get_task(task_id).info())
            except ValueError:
                continue
        return json_response({"tasks": infos})

    @router.post(
        "/tasks",
        status_code=201,
        response_model=StartedTask,
        responses=documented_errors(400, 404, 409),
    )
    async def start_task(request: Request, body: StartTaskRequest) -> Response:
        if body.task_type not in daemon.task_types():
            raise ApiError(
                404,
                f"unknown task type {body.task_type!r}",
                type_name="UnknownTaskTypeError",
                context={"task_type": body.task_type},
            )
        try:
            handle = await ctx.bridge.run(
                daemon.execute_task, body.task_id, body.task_type, **body.params
            )
        except Exception as exc:
            # TaskError here means the task could not be created from its params.
            status = 400 if isinstance(exc, TaskError) else (status_for(exc) or 400)
            raise ApiError(
                status, str(exc), type_name=type(exc).__name__, context={"task_id": body.task_id}
            ) from None
        return json_response(
            {"task_id": handle.task_id, "device_ids": handle.device_ids, "status": "started"}, 201
        )

    @router.get("/tasks/{task_id}", response_model=TaskInfo, responses=documented_errors(404))
    async def get_task(request: Request, task_id: str) -> Response:
        return json_response(handle_of(task_id).info())

    @router.post(
        "/tasks/{task_id}/cancel", response_model=TaskInfo, responses=documented_errors(404, 409)
    )
    async def cancel(request: Request, task_id: str) -> Response:
        return control(task_id, "cancel")

    @router.post(
        "/tasks/{task_id}/pause", response_model=TaskInfo, responses=documented_errors(404, 409)
    )
    async def pause(request: Request, task_id: str) -> Response:
        return control(task_id, "pause")

    @router.post(
        "/tasks/{task_id}/resume", response_model=TaskInfo, responses=documented_errors(404, 409)
    )
    async def resume(request: Request, task_id: str) -> Response:
        return control(task_id, "resume")

    @router.post(
        "/tasks/{task_id}/parameters",
        response_model=ParameterValue,
        responses=documented_errors(400, 404, 500),
    )
    async def set_parameter(request: Request, task_id: str, body: ParameterRequest) -> Response:
        handle = handle_of(task_id)
        try:
            handle.set_parameter(body.key, body.value)
        except (TaskError, KeyError, ValueError, TypeError) as exc:
            raise ApiError(
                400,
                _message(exc),
                type_name=type(exc).__name__,
                context={"task_id": task_id, "key": body.key},
            ) from None
        except Exception as exc:
            raise _task_raised(exc, task_id, body.key) from None
        return json_response({"key": body.key, "value": body.value})

    @router.get(
        "/tasks/{task_id}/parameters/{key}",
        response_model=ParameterValue,
        responses=documented_errors(400, 404, 500),
    )
    async def get_parameter(request: Request, task_id: str, key: str) -> Response:
        handle = handle_of(task_id)
        try:
            value = handle.get_parameter(key)
        except TaskError as exc:
            raise ApiError(
                400,
                str(exc),
                type_name=type(exc).__name__,
                context={"task_id": task_id, "key": key},
            ) from None
        except KeyError as exc:
            raise ApiError(
                404, _message(exc), type_name="KeyError", context={"task_id": task_id, "key": key}
            ) from None
        except Exception as exc:
            raise _task_raised(exc, task_id, key) from None
        return json_response({"key": key, "value": value})

    @router.get("/tasks/{task_id}/error", responses=documented_errors(404))
    async def get_error(request: Request, task_id: str) -> Response:
        handle_of(task_id)
        return recorded_error_response(daemon.get_task_error(task_id), "task", task_id)

    @router.delete("/tasks/{task_id}/error", status_code=204, responses=documented_errors(404))
    async def clear_error(request: Request, task_id: str) -> Response:
        handle_of(task_id)
        daemon.clear_task_error(task_id)
        return Response(status_code=204)

    return router


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _task_raised(exc: Exception, task_id: str, key: str) -> ApiError:
    """The 500 for a task's own parameter method that raised: the task's error, not ours."""
    return ApiError(
        500, str(exc), origin="task", context={"task_id": task_id, "key": key}, cause=exc
    )
