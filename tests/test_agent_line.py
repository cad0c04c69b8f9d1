"""examples/agent_line end to end: the frozen agent flow (shell -> delegate -> approval -> http) in a
real ahserver host on MariaDB, the approval given by a logged-in person through the host's HTTP
endpoint, the digest delivered to a local web hook (the only fake: what lies outside the module)."""
import json
import shutil

import aiohttp
import pytest
from aiohttp import web

from conftest import scratch_mysql_database, scratch_name
from hosting import ROOT, Host, SessionUser, free_port, write_host

EXAMPLE = ROOT / "examples" / "agent_line"
HOST_DB = scratch_name("agent")
pytestmark = pytest.mark.slow


@pytest.fixture
async def hook():
    """A web hook on loopback that keeps what is posted to it."""
    received = []

    async def digest(request):
        received.append(await request.json())
        return web.json_response({"ok": True})
    app = web.Application()
    app.router.add_post("/digest", digest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/digest", port, received
    await runner.cleanup()


@pytest.fixture
def host(tmp_path, hook):
    _, port, _ = hook
    scratch_mysql_database(HOST_DB)
    work = tmp_path / "work"
    work.mkdir()
    workdir = write_host(tmp_path / "host", EXAMPLE / "app", HOST_DB, HOST_DB, "agent test pw",
                         options={"shell_root": str(work), "http_allow": [f"127.0.0.1:{port}"]})
    shutil.copy(EXAMPLE / "wwwroot" / "login.dspy", workdir / "wwwroot" / "login.dspy")
    server = Host(workdir).wait_listening()
    yield server
    server.terminate()


def step(detail, name):
    return next(s for s in detail["steps"] if s["step_name"] == name)


async def test_the_frozen_agent_flow_runs_and_a_person_approves_it_over_http(host, hook):
    url, _, received = hook
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        editor = await SessionUser(host.url, session).login("editor", "org-news")
        task = await editor.ok("submit", "POST", pipeline_id="agent-digest", title="today's digest",
                                 params=json.dumps({"first": "tea", "second": "coffee; rm -rf ~",
                                                    "deliver_to": url}))
        waiting = await editor.until(task["id"], lambda d: d["status"] in ("failed", "cancelled")
                                     or step(d, "approve")["status"] == "waiting", "the approval")
        assert waiting["status"] == "running", (waiting["error"], waiting["steps"])
        assert step(waiting, "approve")["waiting_for"]["prompt"] == "Send the digest on tea, coffee; rm -rf ~?"
        children = {c["step_name"]: c for c in waiting["children"]}
        assert sorted(children) == ["research_1", "research_2"]
        assert all(c["status"] == "succeeded" for c in children.values())
        child = await editor.ok("detail", task_id=children["research_2"]["task_id"])
        assert child["parent"] == {"task_id": task["id"], "step_name": "research_2"}
        assert child["params"] == {"topic": "coffee; rm -rf ~"}  # a value, never shell code
        assert not received  # nothing is sent before a person says so

        decided = await editor.ok("signal", "POST", task_id=task["id"], step_name="approve", decision="approve")
        assert decided["id"] == task["id"]
        done = await editor.until(task["id"], lambda d: d["status"] in ("succeeded", "failed", "cancelled"),
                                  "the delivery")
        assert done["status"] == "succeeded", done
    [digest] = received
    assert digest["topics"] == ["tea", "coffee; rm -rf ~"] and digest["approved_by"] == "editor"
    assert digest["notes"] == ["notes on tea (3 letters)\n", "notes on coffee; rm -rf ~ (16 letters)\n"]


async def test_a_rejected_digest_is_never_sent(host, hook):
    """One topic only: the second sub-line is skipped (its `when`), the approval still asks; a
    rejection fails the task and nothing reaches the hook."""
    url, _, received = hook
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        editor = await SessionUser(host.url, session).login("chief", "org-news")
        task = await editor.ok("submit", "POST", pipeline_id="agent-digest",
                                 params=json.dumps({"first": "tea", "second": "", "deliver_to": url}))
        waiting = await editor.until(task["id"], lambda d: d["status"] in ("failed", "cancelled")
                                     or step(d, "approve")["status"] == "waiting", "the approval")
        assert step(waiting, "research_2")["status"] == "skipped"
        assert [c["step_name"] for c in waiting["children"]] == ["research_1"]
        await editor.ok("signal", "POST", task_id=task["id"], step_name="approve", decision="reject")
        done = await editor.until(task["id"], lambda d: d["status"] in ("succeeded", "failed", "cancelled"),
                                  "the rejection")
    assert done["status"] == "failed" and "rejected by chief" in done["error"]
    assert step(done, "deliver")["status"] == "skipped" and not received
