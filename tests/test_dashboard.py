"""The dashboard (pipeline_service/web/) in a real browser: Debian's chromium, headless, driven
by playwright (no browser download). The server runs in-process over the default service on
SQLite with tasks of two tenants in several states; every assertion reads the rendered page
(the DOM), and the service only confirms what the page did. Every run takes the screenshots;
they are written to docs/img/ only with PIPELINE_SCREENSHOTS=1 (README, "The dashboard"), so a
test run leaves a checkout clean."""
import asyncio
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from conftest import IN_CI, until
from pipeline_service import api
from pipeline_service.ids import new_id
from pipeline_service.web.app import start_dashboard
from pipeline_service.web.viewers import Viewer, Viewers

CHROMIUM = os.environ.get("PIPELINE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
WRITE_SCREENSHOTS = os.environ.get("PIPELINE_SCREENSHOTS") == "1"
EDGES = {("outline", "draft_a"), ("outline", "draft_b"), ("draft_a", "merge"), ("draft_b", "merge")}
pytestmark = pytest.mark.browser


def line(step_type, **configs):
    """outline -> (draft_a, draft_b) -> merge; ``configs`` per step (fail, gate)."""
    deps = {"outline": [], "draft_a": ["outline"], "draft_b": ["outline"], "merge": ["draft_a", "draft_b"]}
    return [{"step_name": name, "step_type": step_type, "depends_on": on, "config": configs.get(name, {})}
            for name, on in deps.items()]


class Line:
    """Two tenants' tasks on one SQLite database, in the default service, and the dashboard over it."""

    def __init__(self, tmp_path):
        self.url = f"sqlite:///{tmp_path / 'dashboard.db'}"
        self.step_type = "web-" + new_id()[:8]
        self.gate = asyncio.Event()  # a gated step runs until the test opens it
        self.fixed = False  # a failing step succeeds once the test has "fixed its source"
        self.acme, self.globex = "acme-" + new_id()[:6], "globex-" + new_id()[:6]
        self.tokens = {self.acme: "acme-token-" + new_id(), self.globex: "globex-token-" + new_id()}

    async def handler(self, tenant_id, task_id, step_name, input_data, config):
        if config.get("gate"):
            await self.gate.wait()
        if config.get("fail") and not self.fixed:
            raise ValueError(f"{step_name} has no source for this topic")
        return {"step": step_name, "upstream": input_data["upstream"]}

    async def start(self):
        self.service = api.configure(self.url, poll_interval=0.1, create_schema=True)
        api.register_handler(self.step_type, self.handler)
        await self.service.storage.create_missing_tables(include_reference=True)
        for name, configs in (("plain", {}), ("failing", {"draft_a": {"fail": True}}),
                              ("gated", {"outline": {"gate": True}}),
                              ("templated", {"draft_a": {"angle": "{{ params.topic }}, {{ upstream.outline.step }}"}})):
            await self.service.define_pipeline(f"{self.step_type}-{name}", line(self.step_type, **configs))
        await self.service.define_pipeline(f"{self.step_type}-approval", [
            {"step_name": "ask", "step_type": "approval", "config": {"prompt": "发布这篇文章吗？ Publish the article?"}},
            {"step_name": "publish", "step_type": self.step_type, "depends_on": ["ask"]}])
        submit = self.service.submit
        self.done = await submit(self.acme, f"{self.step_type}-plain", "ann", "一篇关于茶的文章")
        self.failed = await submit(self.acme, f"{self.step_type}-failing", "ann", "a draft that fails")
        self.running = await submit(self.acme, f"{self.step_type}-gated", "ann", "waiting at the outline")
        self.cancelled = await submit(self.acme, f"{self.step_type}-gated", "ann", "given up")
        self.secret = await submit(self.globex, f"{self.step_type}-plain", "bob", "globex secret plan")
        await self.service.cancel(self.acme, self.cancelled["id"])
        for tenant, task, status in ((self.acme, self.done, "succeeded"), (self.acme, self.failed, "failed"),
                                     (self.acme, self.running, "running"), (self.globex, self.secret, "succeeded")):
            await until(lambda: self.status(tenant, task["id"], status), what=f"{task['title']} {status}")
        viewers = Viewers({token: Viewer(tenant, tenant + "-user") for tenant, token in self.tokens.items()})
        self.runner, port = await start_dashboard(viewers, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{port}/"

    async def status(self, tenant, task_id, wanted):
        return (await self.service.detail(tenant, task_id))["status"] == wanted

    async def stop(self):
        self.gate.set()
        if hasattr(self, "runner"):
            await self.runner.cleanup()
        await api.shutdown(timeout=5)


@pytest.fixture
async def dashboard(tmp_path):
    if not os.path.exists(CHROMIUM):
        message = f"no chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    app = Line(tmp_path)
    try:
        await app.start()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            app.browser = browser
            try:
                yield app
            finally:
                await browser.close()
    finally:
        await app.stop()


async def open_as(app, tenant, hash_="#/"):
    """A fresh browser context (its own session storage) logged in as ``tenant``'s token."""
    context = await app.browser.new_context(viewport={"width": 1180, "height": 640}, locale="zh-CN")
    page = await context.new_page()
    await page.goto(f"{app.base}#token={app.tokens[tenant]}")
    await expect(page.locator("#who")).to_contain_text(tenant)
    if hash_ != "#/":
        await page.evaluate("hash => { location.hash = hash; }", hash_)
    return page


async def screenshot(page, name, full_page=False):
    """The page as a PNG: always taken (it must work), kept in docs/img/ only when asked."""
    picture = await page.screenshot(full_page=full_page)
    assert picture.startswith(b"\x89PNG") and len(picture) > 1000
    if WRITE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / name).write_bytes(picture)


async def confirm(page):
    await expect(page.locator("#confirm")).to_be_visible()
    await page.click("#confirm-ok")


async def test_a_tenant_sees_its_own_tasks_only(dashboard):
    app = dashboard
    page = await open_as(app, app.acme)
    rows = page.locator("tr.task-row")
    await expect(rows).to_have_count(4)
    shown = {await r.get_attribute("data-task-id"): await r.get_attribute("data-status") for r in await rows.all()}
    assert shown == {app.done["id"]: "succeeded", app.failed["id"]: "failed", app.running["id"]: "running",
                     app.cancelled["id"]: "cancelled"}
    assert "globex secret plan" not in await page.locator("#view").inner_text()
    row = page.locator(f"tr[data-task-id='{app.done['id']}']")
    await expect(row.locator(".progress")).to_have_text("4/4")
    await expect(row.locator(".status")).to_have_text("已成功 Succeeded")  # Chinese first, from init/data.json
    await expect(row).to_contain_text("一篇关于茶的文章")
    await screenshot(page, "dashboard-tasks.png")

    await page.select_option("#status-filter", "failed")  # the filter asks the server for that status only
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-task-id", app.failed["id"])
    await page.select_option("#status-filter", "")
    await page.fill("#pipeline-filter", f"{app.step_type}-gated")  # and by pipeline
    await page.press("#pipeline-filter", "Enter")
    await expect(rows).to_have_count(2)
    assert {await r.get_attribute("data-task-id") for r in await rows.all()} == {app.running["id"],
                                                                             app.cancelled["id"]}

    # another tenant's task, even by its id, is not found; its page shows nothing of it
    await page.evaluate("hash => { location.hash = hash; }", f"#/task/{app.secret['id']}")
    await expect(page.locator("#problem")).to_contain_text("未找到")
    await expect(page.locator("svg.dag")).to_have_count(0)

    other = await open_as(app, app.globex)
    await expect(other.locator("tr.task-row")).to_have_count(1)
    await expect(other.locator("tr.task-row")).to_contain_text("globex secret plan")

    # without a token the page shows nothing but how to get in
    stranger = await (await app.browser.new_context()).new_page()
    await stranger.goto(app.base)
    await expect(stranger.locator("#message")).to_contain_text("请先登录")
    await expect(stranger.locator("tr.task-row")).to_have_count(0)


async def test_the_dag_has_a_node_per_step_coloured_by_status_and_the_edges_of_depends_on(dashboard):
    app = dashboard
    page = await open_as(app, app.acme, f"#/task/{app.failed['id']}")
    nodes = page.locator("svg.dag g.node")
    await expect(nodes).to_have_count(4)
    detail = await app.service.detail(app.acme, app.failed["id"])
    for step in detail["steps"]:  # the class is the step's status, whatever it is
        node = page.locator(f"svg.dag g.node[data-step='{step['step_name']}']")
        await expect(node).to_have_class(f"node step-{step['status']}")
    await expect(page.locator("g.node[data-step='draft_a']")).to_have_class("node step-failed")
    await expect(page.locator("g.node[data-step='merge']")).to_have_class("node step-skipped")
    edges = page.locator("svg.dag path.edge")
    await expect(edges).to_have_count(len(EDGES))
    assert {(await e.get_attribute("data-from"), await e.get_attribute("data-to")) for e in await edges.all()} == EDGES
    await expect(page.locator("#step-errors li[data-step='draft_a']")).to_contain_text("has no source for this topic")
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "failed")
    await page.locator("g.node[data-step='draft_a']").click()  # the node view: its error and traceback
    await expect(page.locator("#node-title")).to_have_attribute("data-step", "draft_a")
    await expect(page.locator("#step-error")).to_contain_text("ValueError")
    await screenshot(page, "dashboard-dag.png", full_page=True)


async def test_pausing_from_the_page_pauses_the_task_and_the_page_follows_it(dashboard):
    app = dashboard
    page = await open_as(app, app.acme, f"#/task/{app.running['id']}")
    await expect(page.locator("g.node[data-step='outline']")).to_have_class("node step-running")
    await page.click("#pause")
    await page.click("#confirm-back")  # changing one's mind sends nothing
    await expect(page.locator("#confirm")).to_be_hidden()
    assert (await app.service.detail(app.acme, app.running["id"]))["status"] == "running"
    await page.click("#pause")
    await confirm(page)
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "paused")
    assert (await app.service.detail(app.acme, app.running["id"]))["status"] == "paused"
    # live: the step finishes while the task is paused, and the page shows it without a reload
    app.gate.set()
    await expect(page.locator("g.node[data-step='outline']")).to_have_class("node step-succeeded")
    await page.click("#resume")
    await confirm(page)
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("g.node.step-succeeded")).to_have_count(4)


async def test_an_edit_from_the_node_view_makes_a_new_version_and_the_downstream_runs_again(dashboard):
    app = dashboard
    task_id = app.done["id"]
    page = await open_as(app, app.acme, f"#/task/{task_id}/node/outline")
    await expect(page.locator("#versions tr.version[data-kind='output']")).to_have_count(1)
    await page.fill("#node-editor", "not json")
    await page.click("#save-version")  # refused on the page: nothing is sent
    await expect(page.locator("#message")).to_contain_text("输出不是有效的 JSON 对象")
    await page.fill("#node-editor", json.dumps({"topic": "绿茶 green tea"}, ensure_ascii=False))
    await page.click("#save-version")
    await confirm(page)
    edited = page.locator("#versions tr.version[data-kind='output'][data-version='2']")
    await expect(edited).to_have_attribute("data-source", "manual")
    await expect(page.locator("#node-output")).to_contain_text("绿茶 green tea")
    # the downstream runs again: merge gets a second output, made from the edited outline
    await page.locator("g.node[data-step='merge']").click()
    await expect(page.locator("#versions tr.version[data-kind='output'][data-version='2']")).to_have_attribute(
        "data-source", "engine")
    await expect(page.locator("#node-output")).to_contain_text("绿茶 green tea")
    await expect(page.locator("g.node.step-succeeded")).to_have_count(4)
    merge = await app.service.node(app.acme, task_id, "merge")
    assert merge["version"] == 2 and "绿茶 green tea" in json.dumps(merge["output"], ensure_ascii=False)
    # every version is listed with its lineage: an input, the upstream outputs it was built from
    lineage = page.locator("#versions tr.version[data-kind='input'][data-version='2'] .lineage")
    await expect(lineage).to_have_text("draft_a v2, draft_b v2")
    await expect(page.locator("#versions tr.version[data-kind='output'][data-version='1'] .lineage")).to_contain_text(
        "v1")
    # an older version is shown by clicking its row: output v1 and the input that made it
    await page.locator("#versions tr.version[data-kind='output'][data-version='1']").click()
    await expect(page.locator("#output-heading")).to_contain_text("v1")
    await expect(page.locator("#input-heading")).to_contain_text("v1")
    await expect(page.locator("#node-input-lineage")).to_contain_text("draft_a v1, draft_b v1")
    assert "绿茶" not in await page.locator("#node-output").inner_text()
    await expect(page.locator("#versions tr.version.chosen")).to_have_count(2)
    # an input version alone: the newest input beside the output chosen
    await page.locator("#versions tr.version[data-kind='input'][data-version='2']").click()
    await expect(page.locator("#input-heading")).to_contain_text("v2")
    await expect(page.locator("#node-input")).to_contain_text("绿茶 green tea")
    await expect(page.locator("#output-heading")).to_contain_text("v1")


async def test_an_input_edited_in_the_node_view_is_a_new_manual_version_and_the_config_is_shown(dashboard):
    app = dashboard
    task = await app.service.submit(app.acme, f"{app.step_type}-templated", "ann", "templated", {"topic": "普洱"})
    await until(lambda: app.status(app.acme, task["id"], "succeeded"), what="the templated task")
    page = await open_as(app, app.acme, f"#/task/{task['id']}/node/draft_a")
    await expect(page.locator("#node-config")).to_contain_text("普洱, outline")  # the config as rendered for the run
    await expect(page.locator("#node-input-lineage")).to_contain_text("outline v1")
    await page.select_option("#editor-kind", "input")
    await expect(page.locator("#node-editor")).to_have_value(re.compile("普洱"))
    edited = {"params": {"topic": "乌龙"}, "upstream": {"outline": {"step": "outline", "upstream": {}}}}
    await page.fill("#node-editor", json.dumps(edited, ensure_ascii=False))
    await page.click("#save-version")
    await confirm(page)
    version = page.locator("#versions tr.version[data-kind='input'][data-version='2']")
    await expect(version).to_have_attribute("data-source", "manual")
    await expect(page.locator("#versions tr.version[data-kind='output'][data-version='2']")).to_have_count(1)
    await expect(page.locator("#node-config")).to_contain_text("乌龙, outline")  # rendered from the edit
    node = await app.service.node(app.acme, task["id"], "draft_a")
    assert node["input_version"] == 2 and node["input"]["params"] == {"topic": "乌龙"}


async def test_retry_from_a_failed_step_on_the_page_runs_it_and_its_downstream_again(dashboard):
    app = dashboard
    page = await open_as(app, app.acme, f"#/task/{app.failed['id']}/node/draft_a")
    await expect(page.locator("g.node[data-step='draft_a']")).to_have_class("node step-failed selected")
    app.fixed = True
    await page.click("#retry-step")
    await confirm(page)
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("g.node.step-succeeded")).to_have_count(4)
    await expect(page.locator("#step-errors li")).to_have_count(0)
    assert (await app.service.detail(app.acme, app.failed["id"]))["status"] == "succeeded"


async def test_a_status_the_page_does_not_know_is_still_drawn_by_its_name(dashboard):
    """The page builds classes and labels from the status string: a new status (another
    branch's, say) needs a colour in dashboard.css and a label in init/data.json, no code."""
    app = dashboard
    with sqlite3.connect(app.url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE pipeline_task_steps SET status = 'mystery' WHERE task_id = ? AND step_name = 'merge'",
                   (app.secret["id"],))
    page = await open_as(app, app.globex, f"#/task/{app.secret['id']}")
    await expect(page.locator("g.node[data-step='merge']")).to_have_class("node step-mystery")
    await expect(page.locator("g.node[data-step='merge'] text.sub")).to_contain_text("mystery")
    await expect(page.locator("g.node.step-succeeded")).to_have_count(3)


async def waiting(app, task_id, step_name):
    detail = await app.service.detail(app.acme, task_id)
    return next(s for s in detail["steps"] if s["step_name"] == step_name)["status"] == "waiting"


async def test_an_approval_is_decided_from_the_task_view_by_the_viewer(dashboard):
    app = dashboard
    yes = await app.service.submit(app.acme, f"{app.step_type}-approval", "ann", "publish it")
    no = await app.service.submit(app.acme, f"{app.step_type}-approval", "ann", "publish that")
    for task in (yes, no):
        await until(lambda: waiting(app, task["id"], "ask"), what="the approval waiting")
    page = await open_as(app, app.acme, f"#/task/{yes['id']}")
    box = page.locator(".approval[data-step='ask']")
    await expect(box.locator(".prompt")).to_have_text("发布这篇文章吗？ Publish the article?")
    await expect(box.locator("button.choice")).to_have_count(2)
    await expect(box.locator("button.choice[data-choice='approve']")).to_have_text("批准 Approve")
    await expect(page.locator("g.node[data-step='ask']")).to_have_class("node step-waiting")
    await screenshot(page, "dashboard-approval.png")
    await box.locator("button.choice[data-choice='approve']").click()
    await expect(page.locator("#confirm-text")).to_contain_text("批准 Approve")
    await page.click("#confirm-back")  # changing one's mind sends nothing
    await expect(page.locator("#confirm")).to_be_hidden()
    assert await waiting(app, yes["id"], "ask")
    await box.locator("button.choice[data-choice='approve']").click()
    await confirm(page)
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("g.node.step-succeeded")).to_have_count(2)
    await expect(page.locator(".approval")).to_have_count(0)
    decided = (await app.service.node(app.acme, yes["id"], "ask"))["output"]
    assert decided["decision"] == "approve" and decided["actor"] == app.acme + "-user"  # the viewer, from the token

    await page.evaluate("hash => { location.hash = hash; }", f"#/task/{no['id']}")
    await page.locator(".approval[data-step='ask'] button.choice[data-choice='reject']").click()
    await confirm(page)
    await expect(page.locator("g.node[data-step='ask']")).to_have_class("node step-failed")
    await expect(page.locator("#step-errors li[data-step='ask']")).to_contain_text(f"rejected by {app.acme}-user")
    await expect(page.locator("g.node[data-step='publish']")).to_have_class("node step-skipped")


async def test_a_task_is_submitted_from_the_form_for_the_viewers_tenant(dashboard):
    app = dashboard
    page = await open_as(app, app.acme)
    await expect(page.locator("tr.task-row")).to_have_count(4)
    await expect(page.locator("#submit-form")).to_be_hidden()
    await page.click("#new-task")
    problem = page.locator("#submit-error")
    await page.click("#submit-go")  # every mistake is named beside the form, and nothing is sent
    await expect(problem).to_have_text("请填写流水线 Fill in the pipeline")
    await page.fill("#submit-pipeline", f"{app.step_type}-plain")
    for wrong in ("[1, 2", "[1, 2]", "null"):
        await page.fill("#submit-params", wrong)
        await page.click("#submit-go")
        await expect(problem).to_contain_text("参数不是有效的 JSON 对象")
    await page.fill("#submit-pipeline", "no-such-pipeline")
    await page.fill("#submit-params", json.dumps({"topic": "乌龙"}, ensure_ascii=False))
    await page.click("#submit-go")  # the server's refusal, in its words
    await expect(problem).to_contain_text("提交失败")
    await expect(problem).to_contain_text("no-such-pipeline")
    assert (await app.service.list(app.acme))["total"] == 4
    await expect(page.locator("#known-pipelines option")).to_have_count(3)  # the pipelines listed, as suggestions
    await page.fill("#submit-pipeline", f"{app.step_type}-plain")
    await page.fill("#submit-title", "从表单提交")
    await page.click("#submit-go")
    await expect(page.locator("#task-title")).to_have_text("从表单提交")  # the new task's page
    await expect(page.locator("#task-status .status")).to_have_attribute("data-status", "succeeded")
    made = [t for t in (await app.service.list(app.acme))["rows"] if t["title"] == "从表单提交"]
    assert len(made) == 1 and made[0]["tenant_id"] == app.acme and made[0]["owner_id"] == app.acme + "-user"
    assert (await app.service.detail(app.acme, made[0]["id"]))["params"] == {"topic": "乌龙"}
    assert all(t["title"] != "从表单提交" for t in (await app.service.list(app.globex))["rows"])


async def test_schedules_are_listed_and_paused_resumed_and_run_from_the_page(dashboard):
    app = dashboard
    mine = await app.service.schedule_create(app.acme, f"{app.step_type}-plain", "ann", every=3600, title="每小时 hourly")
    await app.service.schedule_create(app.globex, f"{app.step_type}-plain", "bob", every=3600, title="globex hourly")
    page = await open_as(app, app.acme)
    await page.click("#to-schedules")
    rows = page.locator("tr.schedule-row")
    await expect(rows).to_have_count(1)  # the viewer's tenant's only
    row = page.locator(f"tr.schedule-row[data-schedule-id='{mine['id']}']")
    await expect(row).to_contain_text("每小时 hourly")
    await expect(row).to_have_attribute("data-status", "active")
    await row.locator("button.schedule-pause").click()
    await confirm(page)
    await expect(row).to_have_attribute("data-status", "paused")
    assert (await app.service.schedule_list(app.acme))["rows"][0]["status"] == "paused"
    await row.locator("button.schedule-resume").click()
    await confirm(page)
    await expect(row).to_have_attribute("data-status", "active")
    before = (await app.service.list(app.acme))["total"]
    await row.locator("button.schedule-run-now").click()
    await confirm(page)
    await expect(row.locator(".last-run a")).to_have_count(1)
    assert (await app.service.list(app.acme))["total"] == before + 1
    await row.locator(".last-run a").click()  # the run's task page
    await expect(page.locator("#task-title")).to_have_text("每小时 hourly")
