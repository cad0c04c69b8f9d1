"""The HTTP surface: one function behind every ``wwwroot/*.dspy`` and ``wwwroot/api/*.dspy``.

Two forms of answer, for two kinds of caller:

* the **bricks UI** (``/pipeline_service/<op>.dspy``) gets what bricks widgets read:
  a list as ``{"total", "rows"}`` at the top level, a task or step as its fields at the
  top level, a change as a ``Message`` widget and every error as an ``Error`` widget,
  all with HTTP 200 (bricks' ``jsoncall`` does not show a person the body of a 4xx/5xx
  answer). Beside every ``*_at`` time (UTC ISO-8601, as stored) is ``*_at_local``, the
  same moment in the host's local time zone, for people to read;
* **scripts** (``/pipeline_service/api/<op>.dspy``) get ``{"status": "ok", "data": ...}``
  or ``{"status": "error", "code": ..., "message": ...}`` with an HTTP status.

The tenant is the logged-in user's organisation (``get_userorgid()``) and the owner
the user (``get_user()``), never request parameters: a ``tenant_id`` sent by a client
is ignored. Operations that change a task accept POST only (the session cookie is
SameSite=None: a GET could be forged from another site). A stack trace never leaves
the server: it goes to the host's log.
"""
import json
import logging
from datetime import datetime

from aiohttp import web

from .. import api
from ..json_objects import parse_json_object, to_json
from ..messages import bilingual
from ..exceptions import InvalidInputError, PipelineError
from .appcodes import code_labels
from .dag_picture import dag_svg

log = logging.getLogger(__name__)
HTTP_STATUS = {"not_found": 404, "invalid_input": 400, "invalid_state": 409, "handler_error": 400,
               "not_logged_in": 401, "method_not_allowed": 405, "configuration_error": 500,
               "storage_error": 503, "error": 500, "internal_error": 500}
# the title of the Error widget a person sees (bricks translates it through the host's i18n)
ERROR_TITLES = {"not_found": "未找到", "invalid_input": "参数错误", "handler_error": "参数错误",
                "invalid_state": "当前状态不允许此操作", "not_logged_in": "请先登录",
                "method_not_allowed": "请求方式错误", "configuration_error": "配置错误",
                "storage_error": "数据库暂不可用"}
DEFAULT_ERROR_TITLE = "服务器内部错误"
DONE_TITLES = {"submit": "已提交", "modify": "已修改", "pause": "已暂停", "resume": "已恢复", "cancel": "已取消",
               "schedule_create": "已创建定时", "schedule_pause": "定时已暂停", "schedule_resume": "定时已恢复",
               "schedule_delete": "定时已删除", "schedule_run_now": "已立即运行",
               "signal": "已送达"}
MUTATIONS = frozenset(DONE_TITLES)
POPUP = {"timeout": 5, "cwidth": 16, "cheight": 9}  # the size and life of xls2ui's message popups
LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NESTED_RECORDS = ("rows", "steps", "step", "versions", "runs")  # never input/output/params: those are user data


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
                                     json_object(p, "params", {}), idempotency_key=text(p, "idempotency_key", False),
                                     priority=integer(p, "priority"))


async def _list(tenant, user, p):
    return await api.pipeline_list(tenant, pipeline_id=text(p, "pipeline_id", False),
                                   status=text(p, "status", False), page=integer(p, "page", 1),
                                   rows=integer(p, "rows", 20))


async def _detail(tenant, user, p):
    return await api.pipeline_detail(tenant, text(p, "task_id"))


async def _node(tenant, user, p):
    return await api.pipeline_node(tenant, text(p, "task_id"), text(p, "step_name"), integer(p, "version"),
                                   integer(p, "input_version"))


async def _modify(tenant, user, p):
    updates = json_object(p, "updates", {})
    output = json_object(p, "output")
    if output is not None:  # a form's edit of one step's output (the bricks node page)
        updates = {**updates, text(p, "step_name"): {"output": output}}
    return await api.pipeline_modify(tenant, text(p, "task_id"), updates, text(p, "rerun_from", False))


async def _dag(tenant, user, p):
    detail = await api.pipeline_detail(tenant, text(p, "task_id"))
    return {"id": detail["id"], "title": detail["title"], "status": detail["status"],
            "svg": dag_svg(detail, code_labels("pipeline_step_status"))}


def _on_one(function, key):
    """The endpoint of an API ``function`` that takes the tenant and one id, the parameter ``key``."""
    async def call(tenant, user, p):
        return await getattr(api, function)(tenant, text(p, key))
    return call


async def _signal(tenant, user, p):
    """A person's signal to a waiting step (an approval's decision): ``decision`` (a form field) and/or
    ``payload`` (a JSON object); the actor is the logged-in user, never a request parameter."""
    payload = json_object(p, "payload", {})
    decision = text(p, "decision", required="decision" not in payload)
    if decision is not None:
        payload["decision"] = decision
    return await api.pipeline_signal(tenant, text(p, "task_id"), text(p, "step_name"), payload, actor=user)


async def _schedule_create(tenant, user, p):
    return await api.pipeline_schedule_create(
        tenant, text(p, "pipeline_id"), user, cron=text(p, "cron", False), every=integer(p, "every"),
        at=text(p, "at", False), params=json_object(p, "params", {}), title=text(p, "title", False),
        timezone=text(p, "timezone", False), overlap=text(p, "overlap", False) or "skip",
        catch_up=text(p, "catch_up", False) or "none", priority=integer(p, "priority"))


async def _schedule_list(tenant, user, p):
    return await api.pipeline_schedule_list(tenant, page=integer(p, "page", 1), rows=integer(p, "rows", 20))


OPERATIONS = {"submit": _submit, "list": _list, "detail": _detail, "node": _node, "modify": _modify,
              "dag": _dag, "signal": _signal, "schedule_create": _schedule_create, "schedule_list": _schedule_list,
              **{action: _on_one(f"pipeline_{action}", "task_id") for action in ("pause", "resume", "cancel")},
              **{f"schedule_{action}": _on_one(f"pipeline_schedule_{action}", "schedule_id")
                 for action in ("pause", "resume", "delete", "run_now")}}


def json_answer(body, status=200, headers=None):
    """JSON as UTF-8 text: Chinese stays readable in the answer (no \\u escapes); strict JSON
    (no NaN or Infinity, which are refused on input anyway)."""
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False, allow_nan=False))


def local_time(iso_text):
    """A stored UTC ISO-8601 time as the host's local wall-clock time."""
    moment = datetime.fromisoformat(iso_text.replace("Z", "+00:00"))
    return moment.astimezone().strftime(LOCAL_TIME_FORMAT)


def with_local_times(record):
    """A copy of an answer record with ``<name>_local`` beside each ``<name>_at`` time."""
    if isinstance(record, list):
        return [with_local_times(item) for item in record]
    if not isinstance(record, dict):
        return record
    shown = {}
    for key, value in record.items():
        shown[key] = with_local_times(value) if key in NESTED_RECORDS else value
        if key.endswith("_at"):
            shown[f"{key}_local"] = local_time(value) if isinstance(value, str) else None
    return shown


def with_labels(record, code_set):
    """A row as a grid shows it: ``status_text`` (the Chinese label from init/data.json, or the
    status itself) and, for a task, ``progress_text`` ("succeeded/total")."""
    shown = {**record, "status_text": code_labels(code_set).get(record["status"], record["status"])}
    if "progress" in record:
        shown["progress_text"] = f"{record['progress']['succeeded']}/{record['progress']['total']}"
    return shown


def lineage_text(version):
    """A version's lineage as a grid shows it: an output's input version (``输入 (Input) v2``), an
    input's upstream output versions (``outline v2, draft v1``; ``无上游 (No upstream)`` when it has
    none); the words from i18n/."""
    lineage = version.get("lineage")
    if lineage is None:
        return ""
    if version["kind"] == "output":
        return f"{bilingual('输入')} v{lineage.get('input_version', '-')}"
    return ", ".join(f"{dep} v{n}" for dep, n in lineage.items()) or bilingual("无上游")


def with_decision(step):
    """A step row as the task page's grid reads it: for a step waiting for a person's decision, its
    ``prompt`` and its ``choices`` (JSON text: the approve page, approve.ui, draws a button per choice)."""
    wait = step.get("waiting_for") or {}
    if step["status"] != "waiting" or wait.get("kind") != "signal":
        return step
    return {**step, "prompt": wait.get("prompt") or "", "choices": to_json(wait.get("choices") or [])}


def decision_choices(value):
    """The choices approve.ui is given (the JSON text of a step row's ``choices``) as a list of
    strings; anything else is no choice at all (a signal with a decision it does not take is
    refused by pipeline_signal anyway: this only draws the buttons)."""
    try:
        choices = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return []
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return []
    return choices


def bricks_answer(operation, data):
    data = with_local_times(data)
    if operation in MUTATIONS:
        return {"widgettype": "Message", "options": {
            "title": DONE_TITLES[operation], "message": data.get("title") or data["id"], "user_data": data, **POPUP}}
    if operation == "list":
        return {**data, "rows": [with_labels(row, "pipeline_task_status") for row in data["rows"]]}
    if operation == "detail":  # the task's fields, and its steps as the rows a DataGrid reads
        steps = data.pop("steps")
        return {**with_labels(data, "pipeline_task_status"), "total": len(steps),
                "rows": [with_decision(with_labels(step, "pipeline_step_status")) for step in steps]}
    if operation == "node":  # the step's fields, and its versions as the rows a grid reads
        return {**data, "total": len(data["versions"]),
                "rows": [{**v, "lineage_text": lineage_text(v)} for v in data["versions"]]}
    if operation == "dag":  # the picture, as a widget of its own (its text is escaped: dag_picture)
        return {"widgettype": "Text", "options": {"text": data["svg"], "width": "100%"}}
    return data


def error_answer(for_api, code, message):
    if for_api:
        headers = {"Allow": "POST"} if code == "method_not_allowed" else None
        return json_answer({"status": "error", "code": code, "message": message},
                           status=HTTP_STATUS.get(code, 500), headers=headers)
    return json_answer({"widgettype": "Error", "options": {
        "title": ERROR_TITLES.get(code, DEFAULT_ERROR_TITLE), "message": message, **POPUP}})


async def pipeline_endpoint(operation, request, params_kw, get_user, get_userorgid, for_api=False):
    """Run one operation for the logged-in user; always an aiohttp JSON response.

    ``for_api``: answer in the scripts' form (status codes) instead of the bricks form."""
    try:
        if operation in MUTATIONS and request.method != "POST":
            return error_answer(for_api, "method_not_allowed",
                                f"{operation} changes {'a schedule' if operation.startswith('schedule_') else 'a task'}"
                                f": send it as a POST request, not {request.method}")
        user, tenant = await get_user(), await get_userorgid()
        if not user or not tenant:
            return error_answer(for_api, "not_logged_in",
                                "log in first: pipelines belong to the organisation of a user")
        data = await OPERATIONS[operation](str(tenant), str(user), dict(params_kw or {}))
        return json_answer({"status": "ok", "data": data} if for_api else bricks_answer(operation, data))
    except PipelineError as exc:
        return error_answer(for_api, exc.status, str(exc))
    except Exception:
        log.exception("pipeline endpoint %r failed", operation)
        return error_answer(for_api, "internal_error", "internal error; the server log has the details")
