"""The example host booted with the real ahserver on loopback, against MariaDB, over HTTP."""
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from conftest import mysql_parts, scratch_mysql_database, scratch_name

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "host"
HOST_DB = scratch_name("host")
pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A copy of examples/host with its config pointed at a scratch MariaDB database."""
    scratch_mysql_database(HOST_DB)
    workdir = tmp_path_factory.mktemp("host")
    shutil.copytree(EXAMPLE / "app", workdir / "app")
    (workdir / "wwwroot").mkdir()
    for page in ("login.dspy", "logout.dspy"):
        shutil.copy(EXAMPLE / "wwwroot" / page, workdir / "wwwroot" / page)
    (workdir / "wwwroot" / "pipeline_service").symlink_to(ROOT / "wwwroot")
    config = json.loads((EXAMPLE / "conf" / "config.json").read_text())
    parts = mysql_parts()
    config["databases"]["pipeline"]["kwargs"].update(host=parts["host"], port=parts["port"], user=parts["user"],
                                                     password=parts["password"], db=HOST_DB)
    (workdir / "conf").mkdir()
    (workdir / "conf" / "config.json").write_text(json.dumps(config))
    port = free_port()
    log = open(workdir / "host.log", "w")
    proc = subprocess.Popen([sys.executable, "app/host.py", "-w", str(workdir), "-p", str(port)], cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the example host did not start:\n" + (workdir / "host.log").read_text())
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=15)


class User:
    def __init__(self, base, session):
        self.base, self.session, self.cookie = base, session, None

    async def login(self, userid, orgid):
        async with self.session.get(f"{self.base}/login.dspy", params={"userid": userid, "orgid": orgid}) as r:
            assert r.status == 200
            self.cookie = r.cookies["AIOHTTP_SESSION"].value
        return self

    async def call(self, op, method="GET", **params):
        headers = {"Cookie": f"AIOHTTP_SESSION={self.cookie}"} if self.cookie else {}
        url = f"{self.base}/pipeline_service/{op}.dspy"
        kwargs = {"params": params} if method == "GET" else {"data": params}
        async with self.session.request(method, url, headers=headers, **kwargs) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def http(host):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield lambda: User(host, session)


async def wait_done(user, task_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, body = await user.call("detail", task_id=task_id)
        assert status == 200, body
        if body["data"]["status"] in ("succeeded", "failed", "cancelled"):
            return body["data"]
        assert time.monotonic() < deadline, "the task did not finish over HTTP"
        await asyncio.sleep(0.1)


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
    for op, extra in (("detail", {}), ("node", {"step_name": "review"}), ("cancel", {}), ("pause", {}),
                      ("detail", {"tenant_id": "org-A"}), ("node", {"step_name": "review", "tenant_id": "org-A"})):
        status, body = await bob.call(op, task_id=task["id"], **extra)
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


async def test_logged_out_requests_are_refused(http):
    anonymous = http()
    for op in ("list", "submit", "detail"):
        status, body = await anonymous.call(op, task_id="x")
        assert status == 401 and body["status"] == "error" and body["code"] == "not_logged_in"


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
async def test_bad_parameters_give_a_json_error(http, op, params, message):
    carol = await http().login("carol", "org-C")
    status, body = await carol.call(op, "POST", **params)
    assert status in (400, 404) and body["status"] == "error" and message in body["message"], body
    assert "Traceback" not in json.dumps(body)
