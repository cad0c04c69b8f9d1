"""The dashboard (pipeline_service/web/) in a real browser: Debian's chromium, headless, driven
by playwright (no browser download). The server runs in-process over the default service on
SQLite with tasks of two tenants in several states; every assertion reads the rendered page
(the DOM), and the service only confirms what the page did. Every run takes the screenshots;
they are written to docs/img/ only with PIPELINE_SCREENSHOTS=1 (README, "The dashboard"), so a
test run leaves a checkout clean."""
import asyncio
import json
import os
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
                              ("gated", {"outline": {"gate": True}})):
            await self.service.define_pipeline(f"{self.step_type}-{name}", line(self.step_type, **configs))
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
    await page.fill("#output-editor", "not json")
    await page.click("#save-output")  # refused on the page: nothing is sent
    await expect(page.locator("#message")).to_contain_text("输出不是有效的 JSON 对象")
    await page.fill("#output-editor", json.dumps({"topic": "绿茶 green tea"}, ensure_ascii=False))
    await page.click("#save-output")
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
