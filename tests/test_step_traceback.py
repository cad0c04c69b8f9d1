"""A failed attempt keeps a bounded traceback, read through detail and node (both backends);
create_missing_tables adds a column an older table lacks."""
import asyncio
import logging
import sqlite3

import pytest

from pipeline_service import StorageError
from pipeline_service.engine.executor import MAX_TRACE_CHARS, TRACEBACK_FRAMES
from pipeline_service.ids import now_ms
from pipeline_service.store import schema
from pipeline_service.store.storage import Storage
from conftest import mysql_admin, scratch_mysql_database, scratch_name, until


def lookup_model(name):
    raise LookupError(f"no model named {name!r}")


async def test_a_failed_step_shows_its_traceback_in_detail_and_node(service, tenant, pipeline_id, step_type):
    def broken_handler(tenant_id, task_id, step_name, input_data, config):
        return lookup_model("gpt-0")
    service.register_handler(step_type, broken_handler)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "traced", {})
    detail = await service.wait(tenant, task["id"])
    step = detail["steps"][0]
    assert detail["status"] == "failed" and step["error"] == "LookupError: no model named 'gpt-0'"
    trace = step["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in broken_handler" in trace and "in lookup_model" in trace
    assert trace.endswith("LookupError: no model named 'gpt-0'")
    assert (await service.node(tenant, task["id"], "a"))["step"]["traceback"] == trace


async def test_the_traceback_goes_with_the_last_failed_attempt_and_a_success_clears_it(service, tenant,
                                                                                      pipeline_id, step_type):
    second, release = asyncio.Event(), asyncio.Event()

    async def flaky(tenant_id, task_id, step_name, input_data, config):
        if not second.is_set():
            second.set()
            raise ConnectionError("the model server hung up")
        await release.wait()
        return {"ok": True}
    service.register_handler(step_type, flaky)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"retries": 1}}])
    task = await service.submit(tenant, pipeline_id, "o", "flaky", {})

    async def running_again():
        step = (await service.detail(tenant, task["id"]))["steps"][0]
        return step if step["status"] == "running" and step["attempt"] == 2 else None
    step = await until(running_again, what="the second attempt")
    assert step["error"] == "ConnectionError: the model server hung up"  # the last failed attempt's
    assert "in flaky" in step["traceback"] and step["traceback"].endswith(step["error"])
    release.set()
    step = (await service.wait(tenant, task["id"]))["steps"][0]
    assert step["status"] == "succeeded" and step["error"] is None and step["traceback"] is None


async def test_a_rerun_clears_the_traceback(service, tenant, pipeline_id, step_type):
    fixed, release = asyncio.Event(), asyncio.Event()

    async def handler(tenant_id, task_id, step_name, input_data, config):
        if not fixed.is_set():
            raise ValueError("bad prompt")
        await release.wait()
        return {"ok": True}
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "rerun", {})
    assert (await service.wait(tenant, task["id"]))["steps"][0]["traceback"]
    fixed.set()
    summary = await service.modify(tenant, task["id"], {}, rerun_from="a")
    assert summary["rerun"] == ["a"]
    step = (await service.detail(tenant, task["id"]))["steps"][0]
    assert step["status"] in ("pending", "running") and step["error"] is None and step["traceback"] is None
    release.set()
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"


async def test_a_failure_without_an_exception_has_no_traceback(service, tenant, pipeline_id, step_type):
    async def slow(*args):
        await asyncio.sleep(10)
    service.register_handler(step_type, slow)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"timeout": 0.1}}])
    task = await service.submit(tenant, pipeline_id, "o", "timeout", {})
    step = (await service.wait(tenant, task["id"]))["steps"][0]
    assert step["error"].startswith("timed out") and step["traceback"] is None


def ping(depth, message):  # ping and pong take turns: Python folds only repeats of one line
    if depth == 0:
        raise RecursionError(message)
    return pong(depth - 1, message)


def pong(depth, message):
    return ping(depth - 1, message)


@pytest.mark.parametrize("message", ["deep", "x" * 20_000], ids=["deep", "long-message"])
async def test_the_stored_traceback_is_bounded_to_its_innermost_part(service, tenant, pipeline_id, step_type,
                                                                     message, caplog):
    service.register_handler(step_type, lambda *args: ping(100, message))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    with caplog.at_level(logging.WARNING, logger="pipeline_service.engine.executor"):
        task = await service.submit(tenant, pipeline_id, "o", "deep", {})
        trace = (await service.wait(tenant, task["id"]))["steps"][0]["traceback"]
    assert len(trace) <= MAX_TRACE_CHARS and trace.count('  File "') <= TRACEBACK_FRAMES
    if len(message) > MAX_TRACE_CHARS:  # its end is kept: where it was raised is lost, never what
        assert trace.startswith("…") and trace.endswith("x" * 100)
    else:
        assert trace.count('  File "') == TRACEBACK_FRAMES and trace.endswith("RecursionError: deep")
    logged = next(r.getMessage() for r in caplog.records if getattr(r, "task", None) == task["id"])
    assert f"RecursionError: {message}" in logged  # the log has all of it


# ---- an older table gets the columns added since (create_missing_tables) ----------------------
def old_table_ddl(dialect, without):
    """pipeline_task_steps as a version without the columns ``without`` made it (no indexes)."""
    ddl = schema.create_table_statement("pipeline_task_steps", dialect)
    return "\n".join(line for line in ddl.split("\n") if line.split()[0] not in without).replace(",\n)", "\n)")


def make_old_table(backend, tmp_path, without):
    """A database holding the old table (and the others as they are now): its description."""
    if backend == "sqlite":
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            conn.execute(old_table_ddl("sqlite", without))
        return f"sqlite:///{path}"
    name = scratch_name("oldsteps")
    url = scratch_mysql_database(name)
    conn = mysql_admin(database=name)
    with conn.cursor() as cur:
        cur.execute(old_table_ddl("mysql", without))
    conn.close()
    return url


async def test_a_missing_nullable_column_is_added_in_place_once(backend, tmp_path, tenant, caplog):
    storage = Storage.from_description(make_old_table(backend, tmp_path, {"error_trace"}))
    try:
        row = dict(id="s1", tenant_id=tenant, task_id="t1", step_name="a", step_type="x", depends_on="[]",
                   config="{}", seq=0, input_version=1, ready_at=None, now=now_ms(), priority=5)
        async with storage.transaction() as tx:  # a row written by the older version
            await tx.execute("insert_step", **row)
        with caplog.at_level(logging.WARNING, logger="pipeline_service.store.storage"):
            await storage.create_missing_tables()
        added = [r.getMessage() for r in caplog.records if "ADD COLUMN" in r.getMessage()]
        assert len(added) == 1 and "pipeline_task_steps ADD COLUMN error_trace" in added[0]
        async with storage.transaction() as tx:
            step = await tx.fetch_one("get_step", tenant_id=tenant, task_id="t1", step_name="a")
        assert step["id"] == "s1" and step["error_trace"] is None
        caplog.clear()
        await storage.create_missing_tables()  # nothing is missing any more
        assert not [r for r in caplog.records if "ADD COLUMN" in r.getMessage()]
    finally:
        await storage.close()


async def test_a_missing_not_null_column_is_a_clear_error(backend, tmp_path):
    storage = Storage.from_description(make_old_table(backend, tmp_path, {"crash_count"}))
    try:
        with pytest.raises(StorageError, match="no column crash_count and it cannot be added in place"):
            await storage.create_missing_tables()
    finally:
        await storage.close()
