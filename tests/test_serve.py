"""``serve`` and ``demo --serve`` as a person runs them: real processes, real HTTP; the tenant rule
(a token per tenant, never a request parameter), the refusals of a bad set-up, a clean stop."""
import asyncio
import json
import os
import re
import signal
import socket
import sys

import aiohttp
import pytest

from pipeline_service.demo import TENANTS
from pipeline_service.exceptions import ConfigurationError
from pipeline_service.web.viewers import Viewer, Viewers
from test_cli import ROOT, cli

ADDRESS = re.compile(r"(http://127\.0\.0\.1:\d+/)#token=([A-Za-z0-9_-]+)")


async def started(*args):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline_service", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="250"))


async def read_until(proc, pattern, timeout=120):
    """The lines the process prints up to (and with) the first that matches ``pattern``."""
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        assert line, "the process ended early:\n" + "".join(lines)
        lines.append(line)
        if re.search(pattern, line):
            return lines


async def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 60)


async def get(session, url, token=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, params=params, headers=headers) as response:
        return response.status, await response.json()


async def test_serve_one_tenant_answers_with_its_tasks_only_and_stops_on_sigterm(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert cli("demo", "--quick", "--db", db).returncode == 0
    proc = await started("serve", "--tenant", "acme", "--port", "0", "--db", db)
    try:
        base, token = ADDRESS.search("".join(await read_until(proc, "the dashboard:"))).groups()
        async with aiohttp.ClientSession() as session:
            status, body = await get(session, base + "api/list", token, tenant_id="globex")  # ignored
            assert status == 200 and body["data"]["total"] == len(TENANTS["acme"])
            assert {r["tenant_id"] for r in body["data"]["rows"]} == {"acme"}
            assert (await get(session, base + "api/whoami", token))[1]["data"] == {"tenant_id": "acme",
                                                                                     "user_id": "dashboard"}
            for wrong in (None, token[:-1], token + "x"):
                status, body = await get(session, base + "api/list", wrong)
                assert (status, body["code"]) == (401, "not_logged_in") and "token" in body["message"]
            async with session.post(base + "api/pause", data={"task_id": "no-such-task"},
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 404 and (await response.json())["code"] == "not_found"
            async with session.get(base + "api/pause", params={"task_id": "x"},
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 405  # a change is a POST: never a link or an <img>
            async with session.get(base) as response:
                assert response.status == 200 and "static/dashboard.js" in await response.text()
                assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            for path in ("static/../app.py", "static/app.py", "api/drop"):
                async with session.get(base + path) as response:
                    assert response.status == 404
    finally:
        assert await stop(proc) == 0


async def test_demo_serve_prints_one_address_per_tenant_and_stays_up(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    proc = await started("demo", "--quick", "--serve", "--port", "0", "--db", db)
    try:
        lines = await read_until(proc, "the dashboard stays up")
        addresses = {line.split()[0]: ADDRESS.search(line).groups() for line in lines if ADDRESS.search(line)}
        assert set(addresses) == set(TENANTS)
        async with aiohttp.ClientSession() as session:
            for tenant, (base, token) in addresses.items():
                status, body = await get(session, base + "api/list", token)
                assert status == 200 and len(body["data"]["rows"]) == len(TENANTS[tenant])
                assert {(r["tenant_id"], r["status"]) for r in body["data"]["rows"]} == {(tenant, "succeeded")}
    finally:
        assert await stop(proc) == 0


def test_serve_refuses_a_set_up_that_would_show_the_wrong_tasks(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert cli("create-schema", "--db", db).returncode == 0

    def said(*args):
        done = cli("serve", "--port", "0", "--db", db, *args)
        assert done.returncode != 0
        return " ".join((done.stdout + done.stderr).split())
    assert "exactly one of --tenant T" in said()
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"short": {"tenant": "acme"}}))
    assert "at least 16 printable ASCII characters" in said("--users", str(users))
    assert "exactly one of --tenant T" in said("--users", str(users), "--tenant", "acme")
    users.write_text("{not json")
    assert "cannot read the dashboard's users file" in said("--users", str(users))
    users.write_text(json.dumps({"a-long-enough-token-1": {"tenant": "acme", "role": "admin"}}))
    assert "must be a JSON object" in said("--users", str(users))
    assert "tenant must be a non-empty string" in said("--tenant", "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "cannot listen on 127.0.0.1" in said("--tenant", "acme", "--port", str(taken.getsockname()[1]))


def test_a_token_finds_its_own_viewer_only():
    viewers = Viewers({"a" * 20: Viewer("acme", "ann"), "b" * 20: Viewer("globex", "bob")})
    assert viewers.find("a" * 20) == Viewer("acme", "ann") and viewers.find("b" * 20) == Viewer("globex", "bob")
    assert all(viewers.find(t) is None for t in (None, "", "a" * 19, "a" * 21, "ä" * 20))
    with pytest.raises(ConfigurationError, match="at least one user"):
        Viewers({})
    with pytest.raises(ConfigurationError, match="tenant"):
        Viewers({"c" * 20: Viewer(" acme", "ann")})
    single, token = Viewers.single("acme")
    assert len(single) == 1 and single.find(token) == Viewer("acme", "dashboard") and len(token) >= 16


async def test_a_host_mounts_the_same_page_under_a_prefix(tmp_path):
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from pipeline_service import api
    from pipeline_service.web.app import make_app
    service = api.configure(f"sqlite:///{tmp_path / 'host.db'}", create_schema=True, autostart=False,
                            require_handlers=False)
    try:
        await service.storage.create_missing_tables(include_reference=True)
        await service.define_pipeline("p", [{"step_name": "a", "step_type": "t"}])
        task = await service.submit("acme", "p", "ann", "mounted")
        host = web.Application()
        host.add_subapp("/pipelines", make_app(Viewers({"t" * 20: Viewer("acme", "ann")})))
        async with TestClient(TestServer(host)) as client:
            page = await client.get("/pipelines/")
            assert page.status == 200 and 'src="static/dashboard.js"' in await page.text()
            assert (await client.get("/pipelines/static/dashboard.js")).status == 200
            listed = await client.get("/pipelines/api/list", headers={"Authorization": "Bearer " + "t" * 20})
            assert [r["id"] for r in (await listed.json())["data"]["rows"]] == [task["id"]]
    finally:
        await api.shutdown()
