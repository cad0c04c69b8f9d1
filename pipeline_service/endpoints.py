"""The HTTP surface for the bricks UI: one function behind every ``wwwroot/*.dspy``.

The tenant is the logged-in user's organisation (``get_userorgid()``) and the
owner the user (``get_user()``), never request parameters: a ``tenant_id`` sent by
a client is ignored.  Every answer is JSON: ``{"status": "ok", "data": ...}`` or
``{"status": "error", "code": ..., "message": ...}`` with an HTTP status; a stack
trace never leaves the server.
"""
import logging

from aiohttp import web

from . import api
from .artifacts import parse_json_object
from .exceptions import InvalidInputError, PipelineError

log = logging.getLogger(__name__)
HTTP_STATUS = {"not_found": 404, "invalid_input": 400, "invalid_state": 409, "handler_error": 400,
               "configuration_error": 500, "storage_error": 503, "error": 500}


def text(params, name, required=True):
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInputError(f"parameter {name!r} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"parameter {name!r} must be text, got {type(value).__name__}")
    return value


def json_object(params, name, default=None):
    value = params.get(name)
    if value is None or value == "":
        return default
    return dict(parse_json_object(value, f"parameter {name!r}"))


def integer(params, name, default=None):
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"parameter {name!r} must be a whole number, got {value!r}") from None


async def _submit(tenant, user, p):
    return await api.pipeline_submit(tenant, text(p, "pipeline_id"), user, text(p, "title", False),
                                     json_object(p, "params", {}))


async def _list(tenant, user, p):
    return await api.pipeline_list(tenant, pipeline_id=text(p, "pipeline_id", False),
                                   status=text(p, "status", False), page=integer(p, "page", 1),
                                   rows=integer(p, "rows", 20))


async def _detail(tenant, user, p):
    return await api.pipeline_detail(tenant, text(p, "task_id"))


async def _node(tenant, user, p):
    return await api.pipeline_node(tenant, text(p, "task_id"), text(p, "step_name"), integer(p, "version"))


async def _modify(tenant, user, p):
    return await api.pipeline_modify(tenant, text(p, "task_id"), json_object(p, "updates", {}),
                                     text(p, "rerun_from", False))


async def _pause(tenant, user, p):
    return await api.pipeline_pause(tenant, text(p, "task_id"))


async def _resume(tenant, user, p):
    return await api.pipeline_resume(tenant, text(p, "task_id"))


async def _cancel(tenant, user, p):
    return await api.pipeline_cancel(tenant, text(p, "task_id"))


OPERATIONS = {"submit": _submit, "list": _list, "detail": _detail, "node": _node, "modify": _modify,
              "pause": _pause, "resume": _resume, "cancel": _cancel}


def error(status, code, message):
    return web.json_response({"status": "error", "code": code, "message": message}, status=status)


async def pipeline_endpoint(operation, params_kw, get_user, get_userorgid):
    """Run one operation for the logged-in user; always an aiohttp JSON response."""
    try:
        user, tenant = await get_user(), await get_userorgid()
        if not user or not tenant:
            return error(401, "not_logged_in", "log in first: pipelines belong to the organisation of a user")
        data = await OPERATIONS[operation](str(tenant), str(user), dict(params_kw or {}))
        return web.json_response({"status": "ok", "data": data})
    except PipelineError as exc:
        return error(HTTP_STATUS.get(exc.status, 500), exc.status, str(exc))
    except Exception:
        log.exception("pipeline endpoint %r failed", operation)
        return error(500, "internal_error", "internal error; the server log has the details")
