"""The built-in `http` step type on MariaDB and SQLite, against a local aiohttp server (the
outside world the step talks to: the one fake here) (docs/STEP_TYPES.md, "http")."""
import asyncio

import pytest
from aiohttp import web

from pipeline_service import InvalidInputError, PipelineService
from pipeline_service.steps.http import allowed
from conftest import until


class Target:
    """A local HTTP server that records what it was sent."""

    def __init__(self):
        self.requests = []
        self.flaky = 0            # answers 503 this many times first
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/json", self.json)
        app.router.add_get("/text", self.text)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/redirect", self.redirect)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/flaky", self.flaky_answer)
        self.runner = web.AppRunner(app, handler_cancellation=True)  # a client going away cancels the handler

    async def start(self):
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def json(self, request):
        body = await request.text()
        self.requests.append({"method": request.method, "headers": dict(request.headers), "body": body})
        return web.json_response({"method": request.method, "got": body, "token": request.headers.get("X-Token")},
                                 headers={"X-Answer": "42"})

    async def text(self, request):
        return web.Response(text="plain words")

    async def status(self, request):
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def redirect(self, request):
        return web.Response(status=302, headers={"Location": "/json"})

    async def slow(self, request):
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.disconnected.set()  # the client went away mid-request
            raise
        return web.json_response({"late": True})

    async def flaky_answer(self, request):
        if self.flaky > 0:
            self.flaky -= 1
            return web.Response(status=503, text="try later")
        return web.json_response({"ok": True})


@pytest.fixture
async def target():
    server = await Target().start()
    yield server
    server.release.set()
    await server.runner.cleanup()


@pytest.fixture
async def http_service(make_service, database):
    service = make_service(database, poll_interval=0.1)
    await service.storage.create_missing_tables(include_reference=True)
    return service


async def run(service, tenant, pipeline_id, config, params=None):
    await service.define_pipeline(pipeline_id, [{"step_name": "call", "step_type": "http", "config": config}])
    task = await service.submit(tenant, pipeline_id, "o", "http", params or {})
    detail = await service.wait(tenant, task["id"], timeout=30)
    return detail, detail["steps"][0], await service.node(tenant, task["id"], "call")


async def test_a_templated_post_gets_its_json_answer(http_service, tenant, pipeline_id, target):
    detail, step, node = await run(http_service, tenant, pipeline_id, {
        "method": "POST", "url": target.url + "/{{ params.path }}", "headers": {"X-Token": "{{ params.token }}"},
        "json": {"topic": "{{ params.topic }}", "n": "{{ params.n }}"}},
        {"path": "json", "token": "t-1", "topic": "rust", "n": 3})
    assert detail["status"] == "succeeded", step["error"]
    out = node["output"]
    assert out["status_code"] == 200 and out["headers"]["X-Answer"] == "42"
    assert out["body"] == {"method": "POST", "got": '{"topic": "rust", "n": 3}', "token": "t-1"}
    assert node["input"]["config"]["url"] == target.url + "/json"


async def test_a_text_answer_and_a_raw_body(http_service, tenant, pipeline_id, target):
    _, _, node = await run(http_service, tenant, pipeline_id, {"url": target.url + "/text"})
    assert node["output"]["body"] == "plain words"
    _, _, node = await run(http_service, tenant, pipeline_id + "b", {
        "method": "PUT", "url": target.url + "/json", "body": "raw {{ params.x }}"}, {"x": "text"})
    assert node["output"]["body"]["got"] == "raw text"


@pytest.mark.parametrize("path, config, outcome", [
    ("/status/500", {}, "answered 500 (expected 2xx): 'nope'"),
    ("/status/404", {"expect_status": "4xx"}, None),
    ("/status/500", {"expect_status": [200, 500]}, None),
    ("/status/201", {"expect_status": 200}, "answered 201 (expected 200)"),
    ("/redirect", {}, "answered 302"),  # never followed: a redirect could lead anywhere
])
async def test_expected_statuses(http_service, tenant, pipeline_id, target, path, config, outcome):
    detail, step, node = await run(http_service, tenant, pipeline_id, {"url": target.url + path, **config})
    if outcome is None:
        assert detail["status"] == "succeeded" and node["output"]["body"] == "nope"
    else:
        assert detail["status"] == "failed" and outcome in step["error"]


async def test_retries_until_the_server_answers(http_service, tenant, pipeline_id, target):
    target.flaky = 2
    detail, step, node = await run(http_service, tenant, pipeline_id, {"url": target.url + "/flaky", "retries": 2})
    assert detail["status"] == "succeeded" and step["attempt"] == 3 and node["output"]["body"] == {"ok": True}


async def test_a_timeout_fails_the_attempt(http_service, tenant, pipeline_id, target):
    detail, step, _ = await run(http_service, tenant, pipeline_id, {"url": target.url + "/slow", "timeout": 0.5})
    assert detail["status"] == "failed" and "0.5s" in step["error"]
    await until(target.disconnected.is_set, what="the server to see the request go away")


async def test_a_cancel_mid_request_closes_it(http_service, tenant, pipeline_id, target):
    await http_service.define_pipeline(pipeline_id, [{"step_name": "call", "step_type": "http",
                                                      "config": {"url": target.url + "/slow"}}])
    task = await http_service.submit(tenant, pipeline_id, "o", "to cancel")
    await until(lambda: target.runner.server.connections, what="the request to arrive")
    await http_service.cancel(tenant, task["id"])
    await until(target.disconnected.is_set, what="the server to see the request go away")
    assert (await http_service.detail(tenant, task["id"]))["steps"][0]["status"] == "cancelled"


@pytest.mark.parametrize("config, message", [
    ({"url": "ftp://example.org/x"}, "http:// or https://"),
    ({"url": "{{ params.x }}"}, "http:// or https://"),
    ({"url": "http://127.0.0.1:1/", "method": "BREW"}, "method must be one of"),
    ({"url": "http://127.0.0.1:1/", "json": {}, "body": "x"}, "both json and body"),
    ({"url": "http://127.0.0.1:1/", "expect_status": "ok"}, "expect_status"),
    ({"url": "http://127.0.0.1:1/", "colour": 1}, "unknown keys colour"),
    ({"url": "http://127.0.0.1:1/"}, "ClientConnectorError"),
])
async def test_bad_requests_fail_clearly(http_service, tenant, pipeline_id, config, message):
    detail, step, _ = await run(http_service, tenant, pipeline_id, config, {"x": 3})
    assert detail["status"] == "failed" and message in step["error"]


async def test_http_allow_keeps_tenants_off_other_hosts(make_service, database, tenant, pipeline_id, target):
    service = make_service(database, poll_interval=0.1, http_allow=[f"localhost:{target.port}", "*.example.org"])
    await service.storage.create_missing_tables(include_reference=True)
    for url in (target.url + "/json", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/",
                "http://example.org.evil.com/", f"http://localhost:{target.port}@127.0.0.1:{target.port}/json",
                f"http://LOCALHOST:{target.port + 1}/"):
        detail, step, _ = await run(service, tenant, pipeline_id, {"url": "{{ params.url }}"}, {"url": url})
        assert detail["status"] == "failed" and "http_allow does not list" in step["error"], url
    assert target.requests == []
    detail, step, node = await run(service, tenant, pipeline_id, {"url": "{{ params.url }}"},
                                   {"url": f"http://localhost:{target.port}/json"})
    assert detail["status"] == "succeeded", step["error"]


async def test_a_header_value_cannot_smuggle_another_header(http_service, tenant, pipeline_id, target):
    detail, step, _ = await run(http_service, tenant, pipeline_id, {
        "url": target.url + "/json", "headers": {"X-Token": "{{ params.token }}"}},
        {"token": "t\r\nX-Evil: 1"})
    assert detail["status"] == "failed" and "'X-Token' holds a line break" in step["error"]
    assert target.requests == []


def test_host_patterns():
    assert allowed("API.example.org", 443, ("*.example.org",))
    assert not allowed("example.org.evil.com", 80, ("*.example.org", "example.org"))
    assert allowed("127.0.0.1", 8080, ("127.0.0.1:8080",)) and not allowed("127.0.0.1", 8081, ("127.0.0.1:8080",))
    assert allowed("anything", 1, None) and not allowed("anything", 1, ())


@pytest.mark.parametrize("http_allow", ["example.org", [""], [3], {"a": 1}])
def test_a_bad_http_allow_is_refused(tmp_path, http_allow):
    with pytest.raises(InvalidInputError, match="http_allow must be a list of host patterns"):
        PipelineService(f"sqlite:///{tmp_path / 'x.db'}", http_allow=http_allow)
