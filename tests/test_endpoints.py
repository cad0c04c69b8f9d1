"""The endpoint function in-process: what no HTTP client can provoke (an internal error, a login
without an organisation)."""
import json
import logging

import pytest
from aiohttp.test_utils import make_mocked_request
from appPublic.log import MyLogger

from pipeline_service import api
from pipeline_service.host.endpoints import lineage_text, local_time, pipeline_endpoint
from pipeline_service.host.log import HostLogHandler


async def failing_user():
    raise RuntimeError("the session store is gone")


async def org():
    return "org-1"


async def nobody():
    return None


async def alice():
    return "alice"


@pytest.mark.parametrize("get_user, get_userorgid", [(alice, nobody), (nobody, org)],
                         ids=["a user of no organisation", "no user"])
async def test_without_both_a_user_and_an_organisation_nothing_runs(get_user, get_userorgid, monkeypatch):
    """The tenant is the user's organisation: a user without one is not let in under some shared
    name (None), and the operation is never reached."""
    reached = []

    async def submit(*args, **kwargs):
        reached.append(args)
    monkeypatch.setattr(api, "pipeline_submit", submit)
    request = make_mocked_request("POST", "/pipeline_service/submit.dspy")
    for for_api in (True, False):
        answer = await pipeline_endpoint("submit", request, {"pipeline_id": "p"}, get_user, get_userorgid,
                                         for_api=for_api)
        body = json.loads(answer.text)
        if for_api:
            assert answer.status == 401 and body["code"] == "not_logged_in"
        else:
            assert body["widgettype"] == "Error" and "log in first" in body["options"]["message"]
    assert reached == []


async def test_an_internal_error_answers_both_forms_and_its_traceback_is_in_the_host_log(tmp_path):
    logfile = tmp_path / "host.log"
    handler = HostLogHandler(MyLogger.klass("the-host", levelname="info", logfile=str(logfile)))
    package = logging.getLogger("pipeline_service")
    package.addHandler(handler)
    try:
        request = make_mocked_request("GET", "/pipeline_service/list.dspy")
        for_api = await pipeline_endpoint("list", request, {}, failing_user, org, for_api=True)
        for_ui = await pipeline_endpoint("list", request, {}, failing_user, org)
    finally:
        package.removeHandler(handler)
    assert for_api.status == 500 and json.loads(for_api.text) == {
        "status": "error", "code": "internal_error", "message": "internal error; the server log has the details"}
    assert for_ui.status == 200 and json.loads(for_ui.text) == {"widgettype": "Error", "options": {
        "title": "服务器内部错误", "message": "internal error; the server log has the details",
        "timeout": 5, "cwidth": 16, "cheight": 9}}
    logged = logfile.read_text()
    assert "pipeline endpoint 'list' failed" in logged and "RuntimeError: the session store is gone" in logged
    assert "Traceback" in logged and "Traceback" not in for_api.text + for_ui.text


def test_local_time_is_the_hosts_wall_clock(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert local_time("2024-01-15T12:00:00.000Z") == "2024-01-15 07:00:00"  # EST, UTC-5
        assert local_time("2024-07-15T12:00:00.000Z") == "2024-07-15 08:00:00"  # EDT, UTC-4
    finally:
        monkeypatch.undo()
        time.tzset()


def test_lineage_texts_take_their_words_from_i18n_with_the_english_beside():
    assert lineage_text({"kind": "output", "lineage": {"input_version": 2}}) == "输入 (Input) v2"
    assert lineage_text({"kind": "input", "lineage": {}}) == "无上游 (No upstream)"
    assert lineage_text({"kind": "input", "lineage": {"outline": 2, "draft": 1}}) == "outline v2, draft v1"
    assert lineage_text({"kind": "input", "lineage": None}) == ""
