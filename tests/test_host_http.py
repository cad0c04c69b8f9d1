"""The example host booted with the real ahserver on loopback, against MariaDB, over HTTP.

Two faces of the same operations: the bricks UI (``/pipeline_service/<op>.dspy``: the
shapes bricks widgets read, every answer HTTP 200) and the JSON API for scripts
(``/pipeline_service/api/<op>.dspy``: ``{"status": ...}`` with HTTP status codes).
"""
import asyncio
import json
import shutil
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from conftest import mysql_parts, scratch_mysql_database, scratch_name
from hosting import ROOT, Host, SessionUser, write_host
from pipeline_service import PipelineService

EXAMPLE = ROOT / "examples" / "host"
HOST_DB = scratch_name("http")
HOST_TZ = "Asia/Shanghai"  # UTC+8 all year: the host's local time zone, for the *_local fields
MUTATIONS = ("submit", "modify", "pause", "resume", "cancel")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """examples/host's app and pages in a host folder of a production-style config.json
    (encoded password of a non-root user), on a scratch MariaDB database."""
    scratch_mysql_database(HOST_DB)
    workdir = write_host(tmp_path_factory.mktemp("host"), EXAMPLE / "app", HOST_DB, HOST_DB, "http test pw")
    for page in ("login.dspy", "logout.dspy"):
        shutil.copy(EXAMPLE / "wwwroot" / page, workdir / "wwwroot" / page)
    server = Host(workdir, env={"TZ": HOST_TZ}).wait_listening()
    yield server
    server.terminate()


@pytest.fixture
async def http(host):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield lambda: SessionUser(host.url, session)


async def wait_done(user, task_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, body = await user.call("detail", task_id=task_id)
        assert status == 200, body
        if body["data"]["status"] in ("succeeded", "failed", "cancelled"):
            return body["data"]
        assert time.monotonic() < deadline, "the task did not finish over HTTP"
        await asyncio.sleep(0.1)


def error_widget(body):
    """(title, message) of a bricks Error widget answer."""
    assert body["widgettype"] == "Error" and set(body["options"]) >= {"title", "message"}, body
    return body["options"]["title"], body["options"]["message"]


def scratch_url(name):
    parts = mysql_parts()
    return f"mysql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}/{name}"


def shanghai(iso_utc):
    moment = datetime.fromisoformat(iso_utc.replace("Z", "+00:00")).astimezone(timezone.utc)
    return (moment + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")


async def test_pipeline_end_to_end_over_http_with_tenant_isolation(http):
    alice = await http().login("alice", "org-A")
    bob = await http().login("bob", "org-B")
    status, body = await alice.call("submit", "POST", pipeline_id="demo-article", title="tea article",
                                    params=json.dumps({"topic": "tea"}), tenant_id="org-B", owner_id="mallory")
    assert status == 200 and body["status"] == "ok", body
    task = body["data"]
    assert task["tenant_id"] == "org-A" and task["owner_id"] == "alice"  # from the session, not the request
    detail = await wait_done(alice, task["id"])
    assert detail["status"] == "succeeded" and [s["status"] for s in detail["steps"]] == ["succeeded"] * 6
    status, node = await alice.call("node", task_id=task["id"], step_name="review")
    assert status == 200 and node["data"]["output"]["verdict"] == "approved"
    status, listing = await alice.call("list")
    assert listing["data"]["total"] >= 1
    # org B: not found for org A's task, even with A's ids and a forged tenant parameter
    for op, method, extra in (("detail", "GET", {}), ("node", "GET", {"step_name": "review"}),
                              ("cancel", "POST", {}), ("pause", "POST", {}), ("detail", "GET", {"tenant_id": "org-A"}),
                              ("node", "GET", {"step_name": "review", "tenant_id": "org-A"})):
        status, body = await bob.call(op, method, task_id=task["id"], **extra)
        assert status == 404 and body == {"status": "error", "code": "not_found",
                                          "message": f"task {task['id']!r} does not exist"}, (op, body)
    status, body = await bob.call("list", tenant_id="org-A")
    assert status == 200 and body["data"] == {"total": 0, "rows": []}
    # a human edit over HTTP, then the cascade
    status, body = await alice.call("modify", "POST", task_id=task["id"],
                                    updates=json.dumps({"outline": {"output": {"topic": "green tea",
                                                                               "points": ["one", "two"]}}}))
    assert status == 200 and body["data"]["rerun"] == ["draft_intro", "draft_body", "draft_conclusion", "merge",
                                                       "review"]
    assert (await wait_done(alice, task["id"]))["status"] == "succeeded"
    status, node = await alice.call("node", task_id=task["id"], step_name="merge")
    assert "green tea" in node["data"]["output"]["article"] and node["data"]["version"] == 2


async def test_the_bricks_ui_gets_the_shapes_bricks_widgets_read(http):
    dora = await http().login("dora", "org-D")
    done = await dora.ui("submit", "POST", pipeline_id="demo-article", title="绿茶文章",
                         params=json.dumps({"topic": "绿茶"}))
    assert done["widgettype"] == "Message" and done["options"]["title"] == "已提交"
    assert done["options"]["message"] == "绿茶文章"
    task = done["options"]["user_data"]
    assert task["tenant_id"] == "org-D" and task["title"] == "绿茶文章"
    await wait_done(dora, task["id"])
    listing = await dora.ui("list", page="1", rows="10")
    assert listing["total"] == 1 and [r["id"] for r in listing["rows"]] == [task["id"]]  # at the top level
    detail = await dora.ui("detail", task_id=task["id"])
    assert detail["id"] == task["id"] and detail["status"] == "succeeded"
    assert detail["total"] == 6 and [s["step_name"] for s in detail["rows"]][0] == "outline"
    node = await dora.ui("node", task_id=task["id"], step_name="outline")
    assert node["output"]["topic"] == "绿茶" and node["step"]["status"] == "succeeded"
    paused = await dora.ui("pause", "POST", task_id=task["id"])  # a finished task cannot be paused
    assert error_widget(paused)[0] == "当前状态不允许此操作"


async def test_the_bricks_ui_shows_times_in_the_hosts_time_zone_and_keeps_utc(http):
    erin = await http().login("erin", "org-E")
    task = (await erin.ui("submit", "POST", pipeline_id="demo-article"))["options"]["user_data"]
    await wait_done(erin, task["id"])
    row = (await erin.ui("list"))["rows"][0]
    assert row["created_at"].endswith("Z")  # the stored value, UTC
    assert row["created_at_local"] == shanghai(row["created_at"])
    assert row["finished_at_local"] == shanghai(row["finished_at"])
    detail = await erin.ui("detail", task_id=task["id"])
    step = detail["rows"][0]
    assert step["started_at_local"] == shanghai(step["started_at"])
    node = await erin.ui("node", task_id=task["id"], step_name="outline")
    assert node["versions"][0]["created_at_local"] == shanghai(node["versions"][0]["created_at"])
    assert "created_at_local" not in node["output"]  # a step's own data is never touched


async def test_answers_are_utf8_json_not_escaped(http):
    fay = await http().login("fay", "org-F")
    for api in (True, False):
        status, headers, body = await fay.raw("submit", "POST", api, {"pipeline_id": "demo-article",
                                                                       "title": "乌龙茶"})
        assert status == 200 and "乌龙茶" in body and "\\u" not in body, body
        assert headers["Content-Type"].startswith("application/json")


async def test_logged_out_requests_are_refused(http):
    anonymous = http()
    for op, method in (("list", "GET"), ("submit", "POST"), ("detail", "GET")):
        status, body = await anonymous.call(op, method, task_id="x")
        assert status == 401 and body["status"] == "error" and body["code"] == "not_logged_in"
        title, message = error_widget(await anonymous.ui(op, method, task_id="x"))
        assert title == "请先登录" and "log in first" in message


async def test_changes_accept_post_only(http):
    gus = await http().login("gus", "org-G")
    status, body = await gus.call("submit", "POST", pipeline_id="demo-article")
    task = body["data"]
    await wait_done(gus, task["id"])
    for op in MUTATIONS:
        params = {"task_id": task["id"], "pipeline_id": "demo-article", "updates": "{}"}
        status, headers, text = await gus.raw(op, "GET", True, params)
        assert status == 405 and headers["Allow"] == "POST", (op, text)
        assert json.loads(text) == {"status": "error", "code": "method_not_allowed",
                                    "message": f"{op} changes a task: send it as a POST request, not GET"}
        title, message = error_widget(await gus.ui(op, "GET", **params))
        assert title == "请求方式错误" and "POST" in message
    status, listing = await gus.call("list")  # nothing was submitted, cancelled or re-run by a GET
    assert [(r["id"], r["status"]) for r in listing["data"]["rows"]] == [(task["id"], "succeeded")]


async def test_schedules_and_keyed_submits_over_http(http):
    hana = await http().login("hana", "org-H")
    ivan = await http().login("ivan", "org-I")
    first = await hana.call("submit", "POST", pipeline_id="demo-article", idempotency_key="form-1", priority="8")
    again = await hana.call("submit", "POST", pipeline_id="demo-article", idempotency_key="form-1")
    assert first[0] == again[0] == 200 and first[1]["data"]["id"] == again[1]["data"]["id"]
    assert first[1]["data"]["priority"] == 8
    status, body = await hana.call("schedule_create", "POST", pipeline_id="demo-article", cron="0 9 * * *",
                                   timezone="Asia/Shanghai", title="morning {date}", tenant_id="org-I")
    assert status == 200, body
    schedule = body["data"]
    assert schedule["tenant_id"] == "org-H" and schedule["owner_id"] == "hana" and schedule["cron"] == "0 9 * * *"
    status, body = await hana.call("schedule_create", "POST", pipeline_id="demo-article", every="5")
    assert status == 400 and "every must be a whole number from 10" in body["message"]
    status, headers, text = await hana.raw("schedule_create", "GET", True, {"pipeline_id": "demo-article",
                                                                           "every": "60"})
    assert status == 405 and json.loads(text)["message"].startswith("schedule_create changes a schedule")
    status, body = await hana.call("schedule_run_now", "POST", schedule_id=schedule["id"])
    assert status == 200 and body["data"]["schedule_id"] == schedule["id"]
    await wait_done(hana, body["data"]["id"])
    listing = await hana.ui("schedule_list")
    [row] = listing["rows"]
    assert row["id"] == schedule["id"] and row["runs"][0]["status"] == "succeeded"
    assert row["runs"][0]["created_at_local"] == shanghai(row["runs"][0]["created_at"])
    status, body = await ivan.call("schedule_pause", "POST", schedule_id=schedule["id"])
    assert status == 404 and body["code"] == "not_found"  # another organisation's schedule
    paused = await hana.ui("schedule_pause", "POST", schedule_id=schedule["id"])
    assert paused["options"]["title"] == "定时已暂停" and paused["options"]["user_data"]["status"] == "paused"
    status, body = await hana.call("schedule_delete", "POST", schedule_id=schedule["id"])
    assert status == 200 and body["data"] == {"id": schedule["id"], "deleted": True}
    assert (await hana.call("schedule_list"))[1]["data"] == {"total": 0, "rows": []}


@pytest.mark.parametrize("op, params, message", [
    ("submit", {}, "parameter 'pipeline_id' is required"),
    ("submit", {"pipeline_id": "demo-article", "params": "{not json"}, "parameter 'params' is not valid JSON"),
    ("submit", {"pipeline_id": "demo-article", "params": "[1]"}, "must be a JSON object"),
    ("submit", {"pipeline_id": "nope"}, "pipeline 'nope' does not exist"),
    ("list", {"page": "first"}, "parameter 'page' must be a whole number"),
    ("list", {"status": "done"}, "status must be one of"),
    ("detail", {}, "parameter 'task_id' is required"),
    ("modify", {"task_id": "x", "updates": "[]"}, "must be a JSON object"),
])
async def test_bad_parameters_give_a_json_error_and_an_error_widget(http, op, params, message):
    carol = await http().login("carol", "org-C")
    status, body = await carol.call(op, "POST", **params)
    assert status in (400, 404) and body["status"] == "error" and message in body["message"], body
    assert "Traceback" not in json.dumps(body)
    title, shown = error_widget(await carol.ui(op, "POST", **params))
    assert title in ("参数错误", "未找到") and message in shown


# ---- the bricks pages (wwwroot/*.ui), rendered by ahserver's own template processor ------------

PAGES = ("menu.ui", "index.ui", "submit.ui", "task.ui", "node.ui", "approve.ui")
# the widget types the pages use (bricks and the ecosystem's xls2ui pages); "urlwidget" loads one by URL
WIDGET_TYPES = {"Menu", "VBox", "HBox", "InlineForm", "Tabular", "Button", "Form", "Conform", "urlwidget", "Text"}


def walk(value):
    """Every dict inside a widget description (widgets, options, binds, fields)."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


async def page(user, name, **params):
    headers = {"Cookie": f"AIOHTTP_SESSION={user.cookie}"}
    async with user.session.get(f"{user.base}/pipeline_service/{name}", params={**params, "_webbricks_": "1"},
                                headers=headers) as r:
        assert r.status == 200, (name, await r.text())
        return json.loads(await r.text())  # valid JSON, or this fails


async def test_the_bricks_pages_render_to_widget_json_pointing_at_endpoints_that_answer(http):
    gus = await http().login("gus", "org-G")
    task = (await gus.ui("submit", "POST", pipeline_id="demo-article", title="页面"))["options"]["user_data"]
    await wait_done(gus, task["id"])
    params = {"task.ui": {"task_id": task["id"]}, "node.ui": {"task_id": task["id"], "step_name": "outline"},
              "approve.ui": {"task_id": task["id"], "step_name": "outline", "prompt": "发布?",
                             "choices": json.dumps(["approve", "reject"])}}
    links = set()
    for name in PAGES:
        desc = await page(gus, name, **params.get(name, {}))
        parts = list(walk(desc))
        assert {p["widgettype"] for p in parts if "widgettype" in p} <= WIDGET_TYPES, name
        for part in parts:
            for key in ("url", "data_url", "submit_url"):
                if key in part:
                    method = part.get("method") or part.get("data_method") or "GET"
                    data = part.get("params") or part.get("data_params") or {}
                    links.add((part[key], method.upper(), json.dumps(data, sort_keys=True)))
    assert links, "the pages point nowhere"
    headers = {"Cookie": f"AIOHTTP_SESSION={gus.cookie}"}
    for url, method, data in sorted(links):
        assert url.startswith(f"{gus.base}/pipeline_service/"), url  # entire_url: the host's own address
        name = url.rsplit("/", 1)[1]
        if name.endswith(".ui"):
            assert name in PAGES, url
            continue
        # every endpoint answers; a change is probed with a GET, which it refuses without doing anything
        async with gus.session.get(url, params=json.loads(data), headers=headers) as r:
            answer = json.loads(await r.text())
        assert r.status == 200, (url, answer)
        if method == "POST":
            assert error_widget(answer)[0] == "请求方式错误", (url, answer)
        else:
            assert answer.get("widgettype") != "Error", (url, answer)
    # what the pages read: the statuses' Chinese labels (init/data.json), the DAG, the steps and versions
    index = await page(gus, "index.ui")
    status_field = next(p for p in walk(index) if p.get("name") == "status")
    assert {"value": "running", "text": "执行中"} in status_field["data"]
    listing = await gus.ui("list")
    assert listing["rows"][0]["status_text"] == "已成功" and listing["rows"][0]["progress_text"] == "6/6"
    picture = await gus.ui("dag", task_id=task["id"])
    assert picture["widgettype"] == "Text"
    svg = picture["options"]["text"]
    assert svg.count('class="node step-succeeded"') == 6 and svg.count('class="edge"') == 7
    assert 'data-from="outline" data-to="draft_body"' in svg
    versions = (await gus.ui("node", task_id=task["id"], step_name="draft_body"))["rows"]
    assert [(r["kind"], r["lineage_text"]) for r in versions] == [("input", "outline v1"), ("output", "输入 (Input) v1")]
    assert [r["kind"] for r in (await gus.ui("node", task_id=task["id"], step_name="outline"))["rows"]] == [
        "input", "output"]
    # the node page's form: an edit of one step's output, as a new version, its downstream re-run
    edited = await gus.ui("modify", "POST", task_id=task["id"], step_name="outline",
                          output=json.dumps({"topic": "乌龙", "points": ["a", "b"]}, ensure_ascii=False))
    assert edited["widgettype"] == "Message" and edited["options"]["user_data"]["rerun"][0] == "draft_intro"
    # another organisation's user gets no picture of it
    hal = await http().login("hal", "org-H")
    assert error_widget(await hal.ui("dag", task_id=task["id"]))[0] == "未找到"


async def until_waiting(user, task_id, step_name, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, body = await user.call("detail", task_id=task_id)
        assert status == 200, body
        step = next(s for s in body["data"]["steps"] if s["step_name"] == step_name)
        if step["status"] == "waiting":
            return step
        assert time.monotonic() < deadline, f"step {step_name} did not wait over HTTP ({step['status']})"
        await asyncio.sleep(0.1)


async def test_an_approval_is_given_over_http_by_the_logged_in_user(http):
    """The built-in approval type runs in the host by default; its decision comes through the
    signal endpoint, the actor being the session's user whatever the request says."""
    definer = PipelineService(scratch_url(HOST_DB), autostart=False, require_handlers=False)
    try:
        await definer.define_pipeline("approve-over-http", [
            {"step_name": "ask", "step_type": "approval", "config": {"prompt": "publish?"}}])
    finally:
        await definer.storage.close()
    hana = await http().login("hana", "org-H")
    ivan = await http().login("ivan", "org-I")
    status, body = await hana.call("submit", "POST", pipeline_id="approve-over-http")
    assert status == 200, body
    task_id = body["data"]["id"]
    step = await until_waiting(hana, task_id, "ask")
    assert step["waiting_for"]["prompt"] == "publish?" and step["waiting_for"]["choices"] == ["approve", "reject"]
    status, body = await ivan.call("signal", "POST", task_id=task_id, step_name="ask", decision="approve")
    assert status == 404 and body["code"] == "not_found", body  # another organisation's task
    status, headers, _ = await hana.raw("signal", "GET", True, {"task_id": task_id, "step_name": "ask",
                                                                 "decision": "approve"})
    assert status == 405 and headers["Allow"] == "POST"
    status, body = await hana.call("signal", "POST", task_id=task_id, step_name="ask", decision="maybe")
    assert status == 400 and "one of approve, reject" in body["message"], body
    status, body = await hana.call("signal", "POST", task_id=task_id, step_name="ask")
    assert status == 400 and "parameter 'decision' is required" in body["message"], body
    await until_waiting(hana, task_id, "ask")  # nothing changed
    status, body = await hana.call("signal", "POST", task_id=task_id, step_name="ask", decision="approve",
                                   payload=json.dumps({"note": "fine"}), actor="mallory")
    assert status == 200 and body["data"]["id"] == task_id, body
    status, body = await hana.call("signal", "POST", task_id=task_id, step_name="ask", decision="reject")
    assert status == 409 and body["code"] == "invalid_state", body  # decided already: the first one won
    assert (await wait_done(hana, task_id))["status"] == "succeeded"
    status, node = await hana.call("node", task_id=task_id, step_name="ask")
    output = node["data"]["output"]
    assert output["decision"] == "approve" and output["actor"] == "hana" and output["payload"]["note"] == "fine"
    # the bricks pages: the task page's grid row carries the prompt and the choices, approve.ui draws a
    # button per choice (with a confirmation) posting the decision to signal.dspy: a Message widget
    status, body = await hana.call("submit", "POST", pipeline_id="approve-over-http")
    task_id = body["data"]["id"]
    await until_waiting(hana, task_id, "ask")
    row = next(r for r in (await hana.ui("detail", task_id=task_id))["rows"] if r["step_name"] == "ask")
    assert row["prompt"] == "publish?" and json.loads(row["choices"]) == ["approve", "reject"]
    popup = await page(hana, "approve.ui", task_id=task_id, step_name="ask", prompt=row["prompt"],
                       choices=row["choices"])
    buttons = {b["options"]["label"]: b["binds"][0] for b in walk(popup) if b.get("widgettype") == "Button"}
    assert set(buttons) == {"批准", "驳回"} and buttons["驳回"]["conform"]["widgettype"] == "Conform"
    action = buttons["驳回"]["options"]
    assert action["url"].endswith("/pipeline_service/signal.dspy") and action["method"] == "POST"
    answer = await hana.ui("signal", "POST", **action["params"])
    assert answer["widgettype"] == "Message" and answer["options"]["title"] == "已送达", answer
    broken = await page(hana, "approve.ui", task_id=task_id, step_name="ask", choices="{not json")
    assert not [b for b in walk(broken) if b.get("widgettype") == "Button"]  # no button, no error
    detail = await wait_done(hana, task_id)
    assert detail["status"] == "failed" and "rejected by hana" in detail["error"]
