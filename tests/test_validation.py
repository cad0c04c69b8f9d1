"""Ids compare exactly, and bad input gets a clear package error and writes nothing (issue #18).

Every test runs on MariaDB and SQLite (the ``service`` fixture) unless it is about one of them.
"""
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_service import PipelineService
from pipeline_service.json_objects import MAX_JSON_BYTES, MAX_JSON_DEPTH, check_json_object, to_json
from pipeline_service.exceptions import InvalidInputError, NotFoundError, PipelineError, StorageError
from pipeline_service.ids import new_id
from pipeline_service.dag import MAX_SECONDS

ROOT = Path(__file__).resolve().parent.parent


def nested(depth):
    """A JSON object ``depth`` levels deep (the outer dict is level 1)."""
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def echo(tenant_id, task_id, step_name, input_data, config):
    return {"step": step_name, "params": input_data["params"]}


async def small(tenant_id, task_id, step_name, input_data, config):
    return {"step": step_name}


async def define_chain(service, pipeline_id, step_type, *names, handler=echo):
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, [
        {"step_name": n, "step_type": step_type, **({"depends_on": [names[i - 1]]} if i else {})}
        for i, n in enumerate(names)])


async def task_count(service, tenant):
    return (await service.list(tenant))["total"]


async def refused(call, match=None, error=InvalidInputError):
    with pytest.raises(error, match=match):
        await call()


# ---- exact ids -----------------------------------------------------------------------------

async def test_tenant_task_and_step_ids_compare_exactly(service, tenant, pipeline_id, step_type):
    tenant = "acme-" + tenant[2:].lower()
    await define_chain(service, pipeline_id, step_type, "a")
    task = await service.submit(tenant, pipeline_id, "o", "mine", {"secret": 1})
    await service.wait(tenant, task["id"])
    for other in (tenant.upper(), "á" + tenant[1:], "ａ" + tenant[1:]):
        assert await task_count(service, other) == 0, other
        for call in (service.detail, service.pause, service.resume, service.cancel):
            await refused(lambda: call(other, task["id"]), error=NotFoundError)
        await refused(lambda: service.node(other, task["id"], "a"), error=NotFoundError)
        await refused(lambda: service.modify(other, task["id"], {}, "a"), error=NotFoundError)
    await refused(lambda: service.detail(tenant, task["id"].swapcase()), error=NotFoundError)
    await refused(lambda: service.node(tenant, task["id"], "A"), error=NotFoundError)
    await refused(lambda: service.submit(tenant, pipeline_id.upper(), "o"), error=NotFoundError)
    # an id with whitespace at an edge is refused (MySQL's binary collations ignore trailing spaces)
    for padded in (tenant + " ", " " + tenant, tenant + "\t"):
        await refused(lambda: service.list(padded), "whitespace")
        await refused(lambda: service.detail(padded, task["id"]), "whitespace")
    assert (await service.detail(tenant, task["id"]))["status"] == "succeeded"


async def test_step_names_differing_only_in_case_are_two_steps(service, tenant, pipeline_id, step_type):
    await define_chain(service, pipeline_id, step_type, "Draft", "draft")
    task = await service.submit(tenant, pipeline_id, "o", "t", {"n": 1})
    done = await service.wait(tenant, task["id"])
    assert done["status"] == "succeeded" and [s["step_name"] for s in done["steps"]] == ["Draft", "draft"]
    assert (await service.node(tenant, task["id"], "draft"))["output"]["step"] == "draft"
    assert (await service.node(tenant, task["id"], "Draft"))["output"]["step"] == "Draft"


async def test_pipeline_ids_differing_only_in_case_are_two_pipelines(service, tenant, step_type):
    low = "org1-" + new_id()[:8].lower()
    await define_chain(service, low, step_type + "-l", "low")
    await define_chain(service, low.upper(), step_type + "-h", "high")
    for pipeline_id, step in ((low, "low"), (low.upper(), "high")):
        task = await service.submit(tenant, pipeline_id, "o")
        done = await service.wait(tenant, task["id"])
        assert [s["step_name"] for s in done["steps"]] == [step] and done["status"] == "succeeded"


@pytest.mark.parametrize("bad", ["", "   ", " p", "p ", "p\n", "p\x00", "\u200bp", "p\ud800", "x" * 33, 7, None])
async def test_pipeline_ids_are_refused_at_define(service, tenant, step_type, bad):
    await refused(lambda: service.define_pipeline(bad, [{"step_name": "a", "step_type": step_type}]),
                  "pipeline_id")


# ---- depth, NaN, surrogates, size ------------------------------------------------------------

async def test_deep_nesting_is_refused_with_the_limit_named(service, tenant, pipeline_id, step_type):
    await define_chain(service, pipeline_id, step_type, "a", handler=small)
    deep = nested(100_000)
    await refused(lambda: service.submit(tenant, pipeline_id, "o", params=deep), f"more than {MAX_JSON_DEPTH}")
    await refused(lambda: service.define_pipeline(pipeline_id + "x", [
        {"step_name": "a", "step_type": step_type, "config": deep}]), "nested")
    await refused(lambda: service.submit(tenant, pipeline_id + "x", "o"), error=NotFoundError)
    assert await task_count(service, tenant) == 0
    task = await service.submit(tenant, pipeline_id, "o", params=nested(MAX_JSON_DEPTH))
    await service.wait(tenant, task["id"])
    await refused(lambda: service.modify(tenant, task["id"], {"a": {"output": deep}}), "nested")
    await refused(lambda: service.submit(tenant, pipeline_id, "o", params=nested(MAX_JSON_DEPTH + 1)), "nested")
    assert await task_count(service, tenant) == 1
    assert (await service.node(tenant, task["id"], "a"))["version"] == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_are_refused_everywhere(service, tenant, pipeline_id, step_type, bad):
    await define_chain(service, pipeline_id, step_type, "a")
    await refused(lambda: service.submit(tenant, pipeline_id, "o", params={"x": [1, {"y": bad}]}),
                  "not a JSON number")
    await refused(lambda: service.define_pipeline(pipeline_id, [
        {"step_name": "b", "step_type": step_type, "config": {"x": bad}}]), "not a JSON number")
    task = await service.submit(tenant, pipeline_id, "o")
    await service.wait(tenant, task["id"])
    await refused(lambda: service.modify(tenant, task["id"], {"a": {"input": {"x": bad}}}), "not a JSON number")
    assert await task_count(service, tenant) == 1
    assert [s["step_name"] for s in (await service.detail(tenant, task["id"]))["steps"]] == ["a"]
    with pytest.raises(ValueError):
        to_json({"x": bad})  # nothing emits NaN/Infinity as if it were JSON


async def test_surrogates_are_refused_in_ids_texts_and_params(service, tenant, pipeline_id, step_type):
    await define_chain(service, pipeline_id, step_type, "a")
    bad = "x\ud800"
    step = [{"step_name": "a", "step_type": step_type}]
    for call in (lambda: service.submit(bad, pipeline_id, "o"), lambda: service.submit(tenant, pipeline_id, bad),
                 lambda: service.submit(tenant, pipeline_id, "o", bad),
                 lambda: service.submit(tenant, pipeline_id, "o", params={"k": bad}),
                 lambda: service.submit(tenant, pipeline_id, "o", params={bad: 1}),
                 lambda: service.list(bad), lambda: service.detail(tenant, bad),
                 lambda: service.define_pipeline(pipeline_id, [{"step_name": bad, "step_type": step_type}]),
                 lambda: service.define_pipeline(pipeline_id, step, name=bad),
                 lambda: service.define_pipeline(pipeline_id, step, description=bad)):
        await refused(call)
    assert await task_count(service, tenant) == 0


async def test_oversized_params_are_refused_naming_the_limit(make_service, database, tenant, pipeline_id,
                                                             step_type):
    """One limit (max_content_bytes) for params; they are stored once however many first steps
    a pipeline has (their inputs refer to them)."""
    service = make_service(database, max_content_bytes=64 * 1024)
    await service.storage.create_missing_tables(include_reference=True)
    await service.start()
    await define_chain(service, pipeline_id, step_type, "a", handler=small)
    for size in (64 * 1024 + 1, 20 * 1024 * 1024):
        await refused(lambda: service.submit(tenant, pipeline_id, "o", params={"b": "x" * size}),
                      re.escape("limit is 65,536 bytes (the max_content_bytes option)"))
    assert await task_count(service, tenant) == 0
    roots = pipeline_id + "r"  # four first steps: the params are still stored once
    await service.define_pipeline(roots, [{"step_name": f"r{i}", "step_type": step_type} for i in range(4)])
    task = await service.submit(tenant, roots, "o", params={"b": "x" * (64 * 1024 - 100)})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    node = await service.node(tenant, task["id"], "r3")
    assert node["input"] == {"params": {"b": "x" * (64 * 1024 - 100)}, "upstream": {}}


async def test_paging_and_versions_past_the_integer_types_are_refused(service, tenant):
    for page in (10**18, 0, -1, 1.5, True, "1"):
        await refused(lambda: service.list(tenant, page=page), "page")
    for rows in (501, 0, 10**18):
        await refused(lambda: service.list(tenant, rows=rows), "rows")
    assert (await service.list(tenant, page=1_000_000))["rows"] == []
    await refused(lambda: service.node(tenant, "task", "a", version=2**40), "version")


# ---- definitions and engine options --------------------------------------------------------

@pytest.mark.parametrize("step, message", [
    ({"seq": "x"}, "seq"), ({"seq": True}, "seq"), ({"seq": 2**40}, "seq"),
    ({"step_name": "a" * 65}, "at most 64"), ({"step_name": " a"}, "whitespace"), ({"step_type": ""}, "step_type"),
    ({"step_type": "t" * 65}, "at most 64"), ({"config": {"x": object()}}, "not JSON-serialisable"),
    ({"config": {"timeout": math.nan}}, "timeout"), ({"config": {"timeout": math.inf}}, "timeout"),
    ({"config": {"timeout": 0}}, "timeout"), ({"config": {"timeout": MAX_SECONDS + 1}}, "timeout"),
    ({"config": {"retry_delay": math.nan}}, "retry_delay"), ({"config": {"retry_delay": 1e300}}, "retry_delay"),
    ({"config": {"retry_delay": -1}}, "retry_delay"), ({"config": {"retries": 10**9}}, "retries"),
    ({"config": '{"timeout": NaN}'}, "NaN"), ({"depends_on": "[" * 100_000}, "depends_on"),
    ({"dependson": ["a"]}, "unknown keys"),
])
async def test_bad_steps_are_refused_at_define(service, tenant, pipeline_id, step_type, step, message):
    spec = {"step_name": "b", "step_type": step_type, **step}
    await refused(lambda: service.define_pipeline(pipeline_id, [spec]), message)
    await refused(lambda: service.submit(tenant, pipeline_id, "o"), error=NotFoundError)


async def test_bad_definitions_are_refused(service, tenant, pipeline_id, step_type):
    step = {"step_name": "a", "step_type": step_type}
    for call, message in ((lambda: service.define_pipeline(pipeline_id, [step], name="n" * 256), "at most 255"),
                          (lambda: service.define_pipeline(pipeline_id, "a,b"), "steps must be a list"),
                          (lambda: service.define_pipeline(pipeline_id, [3]), "a step is a dict")):
        await refused(call, message)
    await service.define_pipeline(pipeline_id, [{**step, "step_name": "n" * 64}], name="n" * 255)


async def test_engine_options_written_by_pipeline_core_are_checked_at_submit(service, tenant, pipeline_id,
                                                                             step_type):
    service.register_handler(step_type, small)
    async with service.storage.transaction() as tx:  # a definition written straight into the tables
        await tx.execute("insert_pipeline", id=pipeline_id, name="core", description=None)
        await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id=pipeline_id, step_name="a",
                         step_type=step_type, depends_on="", config='{"retry_delay": Infinity}', seq=1)
    await refused(lambda: service.submit(tenant, pipeline_id, "o"), "Infinity")
    assert await task_count(service, tenant) == 0


@pytest.mark.parametrize("options", [
    {"poll_interval": 0}, {"poll_interval": -1}, {"poll_interval": "1"}, {"poll_interval": math.nan},
    {"lease_seconds": 0}, {"lease_seconds": math.inf}, {"max_crashes": None}, {"max_crashes": 0},
    {"concurrency": 0}, {"concurrency": 2.5}, {"concurrency": True}, {"tenant_concurrency": 0},
    {"autostart": "yes"}, {"create_schema": 1}, {"handlers": {"a": print}},
])
def test_bad_service_options_are_refused(tmp_path, options):
    with pytest.raises(InvalidInputError):
        PipelineService(f"sqlite:///{tmp_path / 'x.db'}", **options)
    assert not (tmp_path / "x.db").exists()


def test_a_database_url_with_a_bad_port_is_a_storage_error():
    for url in ("mysql://root@127.0.0.1:99999/db", "mysql://root:secret@host:port/db"):
        with pytest.raises(StorageError, match="port") as caught:
            PipelineService(url)
        assert "secret" not in str(caught.value)


# ---- states, storage, CLI --------------------------------------------------------------------

async def test_a_failed_task_can_be_cancelled(service, tenant, pipeline_id, step_type):
    async def fail(tenant_id, task_id, step_name, input_data, config):
        raise RuntimeError("boom")
    await define_chain(service, pipeline_id, step_type, "a", "b", handler=fail)
    task = await service.submit(tenant, pipeline_id, "o")
    assert (await service.wait(tenant, task["id"]))["status"] == "failed"
    assert (await service.cancel(tenant, task["id"]))["status"] == "cancelled"
    steps = (await service.detail(tenant, task["id"]))["steps"]
    assert [s["status"] for s in steps] == ["failed", "cancelled"]


async def test_sqlite_disk_full_is_a_storage_error(tmp_path, tenant, pipeline_id, step_type):
    service = PipelineService(f"sqlite:///{tmp_path / 'full.db'}", autostart=False)
    await service.storage.create_missing_tables(include_reference=True)
    await define_chain(service, pipeline_id, step_type, "a")
    conn = service.storage.connector._sor.conn
    pages = await (await conn.execute("PRAGMA page_count")).fetchone()
    await conn.execute(f"PRAGMA max_page_count = {pages[0] + 2}")  # SQLite's own 'database or disk is full'
    try:
        await refused(lambda: service.submit(tenant, pipeline_id, "o", params={"b": "x" * 1_000_000}),
                      "disk is full", StorageError)
        assert await task_count(service, tenant) == 0
    finally:
        await service.stop()


def test_a_failing_cli_command_leaves_no_database_file(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    for args in (("list", "--tenant", "acme"), ("cancel", "--tenant", "acme", "no-such-task")):
        done = subprocess.run([sys.executable, "-m", "pipeline_service", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, env=env)
        assert done.returncode == 1 and "create-schema" in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


# ---- the one JSON check (the executor checks handler results with it) ----------------------

def test_check_json_object_accepts_json_and_refuses_the_rest():
    fine = {"s": "é中", "n": [1, 2.5, True, None], "d": nested(MAX_JSON_DEPTH - 1)}
    assert check_json_object(fine, "result") is fine
    for bad, message, limit in (([1], "must be a JSON object", None), ({"x": math.nan}, "not a JSON number", None),
                                ({"x": "\udfff"}, "surrogate", None), ({1: "x"}, "key", None),
                                ({"x": {1, 2}}, "set", None), (nested(100_000), "nested", None),
                                ({"x": "y" * 11}, "limit is 10 bytes", 10)):
        with pytest.raises(InvalidInputError, match=message) as caught:
            check_json_object(bad, "result", max_bytes=limit or MAX_JSON_BYTES)
        assert str(caught.value).startswith("result") and isinstance(caught.value, PipelineError)


async def test_a_wait_that_runs_out_is_a_package_error(database, tenant, pipeline_id, step_type):
    from pipeline_service import PipelineError, PipelineService, WaitTimeoutError
    service = PipelineService(database, autostart=False, require_handlers=False)
    await service.storage.create_missing_tables(include_reference=True)
    try:
        await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
        task = await service.submit(tenant, pipeline_id, "o", "never run", {})
        with pytest.raises(WaitTimeoutError, match="still pending") as raised:
            await service.wait(tenant, task["id"], timeout=0.1)
        assert isinstance(raised.value, PipelineError) and isinstance(raised.value, TimeoutError)
    finally:
        await service.stop()


async def test_a_step_config_past_its_limit_is_refused_naming_it(service, pipeline_id, step_type):
    """A config is copied into every task's step rows: it keeps a limit of its own (4 MiB)."""
    from pipeline_service.json_objects import MAX_CONFIG_BYTES
    await refused(lambda: service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"x": "y" * MAX_CONFIG_BYTES}}]),
        re.escape(f"the limit is {MAX_CONFIG_BYTES:,} bytes (a step config's limit)"))
