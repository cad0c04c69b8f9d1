"""The executor under adversity, on MariaDB and SQLite: deploys, hostile handlers, unstorable
outcomes, hung threads, leases of steps nobody runs, and late runs of re-claimed steps."""
import asyncio
import base64
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pipeline_service.json_objects import MAX_JSON_BYTES, MAX_JSON_DEPTH
from pipeline_service.store.storage import Storage
from conftest import until


@pytest.fixture
def new_service(make_service):
    """Makes a service (a process, in these tests) running ``handlers`` ({step_type: fn}); every
    one is stopped after the test, whatever happens in it."""
    async def new(database, handlers=None, **options):
        service = make_service(database, **{"poll_interval": 0.1, **options})
        for step_type, fn in (handlers or {}).items():
            service.register_handler(step_type, fn)
        await service.storage.create_missing_tables(include_reference=True)
        return service
    return new


async def step_row(storage, tenant, task_id, step_name):
    return await storage.atomic(lambda tx: tx.fetch_one("get_step", tenant_id=tenant, task_id=task_id,
                                                        step_name=step_name))


async def stored_row(database, tenant, task_id, step_name):
    """The step row as a newcomer reads it (its own connection: SQLite allows one process at a time)."""
    storage = Storage.from_description(database)
    try:
        return await step_row(storage, tenant, task_id, step_name)
    finally:
        await storage.close()


# ---- a deploy is not a crash (#11.4) --------------------------------------------------------
async def test_a_graceful_stop_hands_a_running_step_back_at_once_three_deploys_cost_nothing(
        new_service, database, tenant, pipeline_id, step_type):
    calls = []

    async def long_step(tenant_id, task_id, step_name, input_data, config):
        calls.append(time.monotonic())
        if len(calls) <= 3:  # deployed three times while it runs
            await asyncio.sleep(3600)
        return {"runs": len(calls)}
    handlers = {step_type: long_step}
    service = await new_service(database, handlers, lease_seconds=30.0)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "deployed", {})
    for deploy in (1, 2, 3):
        await until(lambda: len(calls) == deploy, what=f"run {deploy}")
        await service.stop(timeout=0.1)
        row = await stored_row(database, tenant, task["id"], "a")
        assert row["status"] == "pending" and row["ready_at"] is not None  # ready for anyone, now
        assert row["owner"] is None and row["lease_expires_at"] is None
        assert row["crash_count"] == 0 and row["attempt"] - row["attempt_base"] == 0  # no budget used
        service = await new_service(database, handlers, lease_seconds=30.0)
        await service.start()  # the next process takes it up within a poll, not a lease
    detail = await service.wait(tenant, task["id"], timeout=10)
    assert detail["status"] == "succeeded" and detail["steps"][0]["attempt"] == 1
    assert (await service.node(tenant, task["id"], "a"))["output"] == {"runs": 4}
    assert (await step_row(service.storage, tenant, task["id"], "a"))["crash_count"] == 0
    await service.stop()


async def test_another_process_takes_a_handed_back_step_within_a_poll_interval(new_service, mysql_schema, tenant,
                                                                               pipeline_id, step_type):
    started, poll = [], 0.2

    async def long_step(tenant_id, task_id, step_name, input_data, config):
        started.append(time.monotonic())
        if len(started) == 1:
            await asyncio.sleep(3600)
        return {}
    handlers = {step_type: long_step}
    leaving = await new_service(mysql_schema, handlers, lease_seconds=30.0, poll_interval=poll)
    await leaving.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await leaving.submit(tenant, pipeline_id, "o", "deployed", {})
    await until(lambda: started)
    staying = await new_service(mysql_schema, handlers, lease_seconds=30.0, poll_interval=poll)
    await staying.start()
    await leaving.stop(timeout=0.1)
    stopped = time.monotonic()
    # taken up at the other process's next poll, not after the 30 s lease: the bound
    # is generous because the machine is shared (a timing figure belongs in bench/)
    await until(lambda: len(started) == 2, timeout=10)
    assert started[1] - stopped < 10
    assert (await staying.wait(tenant, task["id"]))["status"] == "succeeded"
    await staying.stop()


async def test_a_step_handed_back_in_a_paused_task_waits_for_resume(new_service, database, tenant, pipeline_id,
                                                                    step_type):
    calls = []

    async def long_step(*args):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(3600)
        return {}
    handlers = {step_type: long_step}
    service = await new_service(database, handlers)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "paused", {})
    await until(lambda: calls)
    await service.pause(tenant, task["id"])
    await service.stop(timeout=0.1)
    row = await stored_row(database, tenant, task["id"], "a")
    assert row["status"] == "pending" and row["ready_at"] is None and row["crash_count"] == 0
    service = await new_service(database, handlers)
    await service.start()
    await service.resume(tenant, task["id"])
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded" and len(calls) == 2
    await service.stop()


# ---- one tenant's unstorable outcome fails nobody else's step (#18.2) ----------------------------
def noise(chars):
    """Text no compressor can make much smaller (random base64): stored at about its own size."""
    return base64.b64encode(os.urandom(chars * 3 // 4 + 3)).decode("ascii")[:chars]


def nested(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


async def run_together(service, pipeline_id, step_type, results):
    """One task per (tenant, result); all handlers return at the same moment, so their outcomes
    are recorded together. Returns the tasks' details by tenant."""
    arrived, release = [], asyncio.Event()

    async def handler(tenant_id, task_id, step_name, input_data, config):
        arrived.append(tenant_id)
        await release.wait()
        return results[tenant_id]
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    tasks = {tenant: await service.submit(tenant, pipeline_id, "o", "together", {}) for tenant in results}
    await until(lambda: len(arrived) == len(results))
    release.set()
    return {tenant: await service.wait(tenant, task["id"], timeout=20) for tenant, task in tasks.items()}


# made in the test: pytest would show a huge or deep value in a failure report
@pytest.mark.parametrize("poison, message", [
    (lambda: {"text": "\ud800"}, "lone surrogate"),
    (lambda: {"x": float("nan")}, "is not a JSON number"),
    (lambda: {"x": [float("inf")]}, "is not a JSON number"),
    (lambda: nested(MAX_JSON_DEPTH + 1), f"nested more than {MAX_JSON_DEPTH} levels deep"),
    (lambda: nested(100_000), f"nested more than {MAX_JSON_DEPTH} levels deep"),
    (lambda: {"text": "x" * MAX_JSON_BYTES}, f"the limit is {MAX_JSON_BYTES:,} bytes"),
], ids=["surrogate", "nan", "infinity", "too-deep", "very-deep", "too-big"])
async def test_an_unstorable_output_fails_only_its_own_attempt(service, tenant, pipeline_id, step_type, poison,
                                                               message):
    innocent = [f"{tenant}-ok{i}" for i in range(3)]
    details = await run_together(service, pipeline_id, step_type,
                                 {tenant: poison(), **{t: {"fine": t} for t in innocent}})
    assert details[tenant]["status"] == "failed" and message in details[tenant]["steps"][0]["error"]
    assert (await service.node(tenant, details[tenant]["id"], "a"))["output"] is None
    for other in innocent:
        assert details[other]["status"] == "succeeded" and details[other]["steps"][0]["attempt"] == 1
        assert (await service.node(other, details[other]["id"], "a"))["output"] == {"fine": other}
        assert (await step_row(service.storage, other, details[other]["id"], "a"))["crash_count"] == 0


async def test_big_outputs_finishing_together_are_all_recorded(service, tenant, pipeline_id, step_type):
    """Each output fits, together they pass MySQL's max_allowed_packet (quotes double when escaped)."""
    tenants = [f"{tenant}-{i}" for i in range(3)]
    big = "'" * (MAX_JSON_BYTES - 100)
    details = await run_together(service, pipeline_id, step_type, {t: {"text": big} for t in tenants})
    for t in tenants:
        assert details[t]["status"] == "succeeded" and details[t]["steps"][0]["attempt"] == 1
        assert (await step_row(service.storage, t, details[t]["id"], "a"))["crash_count"] == 0


async def test_an_outcome_the_database_refuses_fails_only_its_own_attempt(new_service, tmp_path, tenant, pipeline_id,
                                                                          step_type):
    """The database's own limit below the package's (SQLite's length limit, lowered here; the output
    does not compress below it): the batch
    is recorded one by one, and only the outcome it refuses fails, with the database's reason."""
    service = await new_service(f"sqlite:///{tmp_path / 'limited.db'}")
    await service.start()
    conn = service.storage.connector._sor.conn  # the one aiosqlite connection
    await conn._execute(conn._conn.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, 100_000)
    innocent = [f"{tenant}-ok{i}" for i in range(3)]
    details = await run_together(service, pipeline_id, step_type,
                                 {tenant: {"text": noise(200_000)}, **{t: {"fine": t} for t in innocent}})
    error = details[tenant]["steps"][0]["error"]
    assert details[tenant]["status"] == "failed" and "its outcome could not be stored" in error
    assert "too big" in error
    for other in innocent:
        assert details[other]["status"] == "succeeded"
        assert (await step_row(service.storage, other, details[other]["id"], "a"))["crash_count"] == 0
    await service.stop()


async def test_an_error_message_that_is_not_utf8_is_stored_escaped(service, tenant, pipeline_id, step_type):
    async def failing(*args):
        raise ValueError("bad \ud800 byte " + "y" * 10_000)
    service.register_handler(step_type, failing)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "surrogate", {})
    detail = await service.wait(tenant, task["id"])
    error = detail["steps"][0]["error"]
    assert detail["status"] == "failed" and error.startswith("ValueError: bad \\ud800 byte yyy")
    assert len(error) <= 2000


# ---- what a handler receives equals what is stored (#18.3) -------------------------------------
async def test_handlers_and_callers_never_share_objects_with_what_is_stored(service, tenant, pipeline_id,
                                                                            step_type):
    kept, seen = {"v": 1}, {}

    async def handler(tenant_id, task_id, step_name, input_data, config):
        seen[step_name] = input_data
        if step_name == "a":
            return kept  # and keeps a reference to it
        if step_name == "b":
            input_data["params"]["x"] = "changed by b"
            input_data["upstream"]["a"]["v"] = 2
            kept["v"] = 3
            release_c.set()
        return {"by": step_name}
    release_c = asyncio.Event()
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "c", "step_type": step_type, "depends_on": ["a", "b"]},
    ])
    params = {"x": "original"}
    task = await service.submit(tenant, pipeline_id, "o", "shared", params)
    params["x"] = "changed by the caller"
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded" and detail["params"] == {"x": "original"}
    assert seen["c"] == {"params": {"x": "original"}, "upstream": {"a": {"v": 1}, "b": {"by": "b"}}}
    for step in ("a", "b", "c"):
        assert (await service.node(tenant, task["id"], step))["input"]["params"] == {"x": "original"}
    assert (await service.node(tenant, task["id"], "a"))["output"] == {"v": 1}
    assert (await service.node(tenant, task["id"], "c"))["input"] == seen["c"]


async def test_a_handler_editing_its_config_does_not_change_the_engine_options(service, tenant, pipeline_id,
                                                                              step_type):
    attempts = []

    async def handler(tenant_id, task_id, step_name, input_data, config):
        attempts.append(dict(config))
        config["retries"] = 0
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return {}
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"retries": 1}}])
    task = await service.submit(tenant, pipeline_id, "o", "config", {})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    assert attempts == [{"retries": 1}, {"retries": 1}]


# ---- the heartbeat extends only what runs here (#18.4) -----------------------------------------
async def test_a_step_held_by_this_process_that_nothing_runs_is_taken_back(new_service, database, tenant,
                                                                           pipeline_id, step_type):
    """A row owned here whose run is gone (e.g. its outcome was lost in an outage) is not kept
    alive by the heartbeat of the steps that do run: its lease expires and it runs again."""
    release, orphan_ran = asyncio.Event(), []

    async def long_step(*args):
        await release.wait()
        return {}

    async def orphan_step(*args):
        orphan_ran.append(time.monotonic())
        return {}
    handlers = {step_type + "-long": long_step, step_type + "-orphan": orphan_step}
    service = await new_service(database, handlers, lease_seconds=1.0, autostart=False)
    await service.define_pipeline(pipeline_id, [{"step_name": "o", "step_type": step_type + "-orphan"}])
    await service.define_pipeline(pipeline_id + "L", [{"step_name": "l", "step_type": step_type + "-long"}])
    orphan = await service.submit(tenant, pipeline_id, "o", "orphan", {})
    [claim] = await service.claimer.claim_ready(service.executor.owner, 1, 1000, [step_type + "-orphan"], {}, None)
    await service.start()
    long_task = await service.submit(tenant, pipeline_id + "L", "o", "long", {})  # keeps the heartbeat going
    detail = await service.wait(tenant, orphan["id"], timeout=6)
    assert detail["status"] == "succeeded" and orphan_ran
    assert (await service.detail(tenant, long_task["id"]))["status"] == "running"
    assert (await step_row(service.storage, tenant, orphan["id"], "o"))["crash_count"] == 1
    release.set()
    assert (await service.wait(tenant, long_task["id"]))["status"] == "succeeded"
    await service.stop()


# ---- plain handlers: a pool of their own; hung threads stay one tenant's problem (#18.6) -------
async def test_hung_plain_handlers_of_one_tenant_never_block_another_tenant(new_service, database, tenant,
                                                                            pipeline_id, step_type):
    unblock = threading.Event()

    def hang(*args):
        unblock.wait(60)
        return {}

    def instant(*args):
        return {"instant": True}
    handlers = {step_type + "-hang": hang, step_type + "-instant": instant}
    service = await new_service(database, handlers, sync_threads=4)
    await service.start()
    await service.define_pipeline(pipeline_id, [{"step_name": "h", "step_type": step_type + "-hang",
                                                 "config": {"timeout": 0.2}}])
    await service.define_pipeline(pipeline_id + "I", [{"step_name": "i", "step_type": step_type + "-instant"}])
    hung = [await service.submit(tenant, pipeline_id, "o", "hangs", {}) for _ in range(10)]  # > the default pool
    for task in hung:
        detail = await service.wait(tenant, task["id"])
        error = detail["steps"][0]["error"]
        assert detail["status"] == "failed" and ("timed out after 0.2s" in error or "still run after" in error)
    other = tenant + "-other"
    for _ in range(3):
        task = await service.submit(other, pipeline_id + "I", "o", "instant", {})
        assert (await service.wait(other, task["id"], timeout=5))["status"] == "succeeded"
    assert service.executor.sync.hung[tenant] >= 1
    unblock.set()
    await until(lambda: service.executor.sync.total_hung == 0, what="the hung threads to end")
    await service.stop()


def test_a_hung_plain_handler_does_not_keep_the_process_from_exiting(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, time
        from pipeline_service import PipelineService

        def hang(*args):
            time.sleep(3600)

        async def main():
            service = PipelineService("sqlite:///{tmp_path / 'exit.db'}", create_schema=True, poll_interval=0.1)
            service.register_handler("hang", hang)
            await service.storage.create_missing_tables(include_reference=True)
            await service.define_pipeline("p", [{{"step_name": "h", "step_type": "hang",
                                                  "config": {{"timeout": 0.2}}}}])
            task = await service.submit("t", "p", "o")
            detail = await service.wait("t", task["id"])
            assert detail["status"] == "failed", detail
            await service.stop(timeout=1)
            print("stopped", flush=True)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr[-2000:]


# ---- a hostile handler fails only its attempt (#18.10) -----------------------------------------
class Custom(BaseException):
    pass


@pytest.mark.parametrize("raised, message", [
    (SystemExit(3), "the handler raised SystemExit: 3 (only this attempt fails"),
    (KeyboardInterrupt(), "the handler raised KeyboardInterrupt (only this attempt fails"),
    (GeneratorExit(), "the handler raised GeneratorExit"),
    (Custom("mine"), "the handler raised Custom: mine"),
    (asyncio.CancelledError(), "CancelledError of its own (nothing cancelled it)"),
    (TimeoutError("the model did not answer"), "TimeoutError: the model did not answer"),
])
@pytest.mark.parametrize("kind", ["async", "plain"])
async def test_whatever_a_handler_raises_fails_only_its_attempt(service, tenant, pipeline_id, step_type, raised,
                                                                message, kind):
    async def async_handler(*args):
        raise raised

    def plain_handler(*args):
        raise raised
    service.register_handler(step_type, async_handler if kind == "async" else plain_handler)
    service.register_handler(step_type + "-ok", lambda *args: {"ok": True})
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    await service.define_pipeline(pipeline_id + "ok", [{"step_name": "a", "step_type": step_type + "-ok"}])
    task = await service.submit(tenant, pipeline_id, "o", "hostile", {})
    detail = await service.wait(tenant, task["id"], timeout=10)
    assert detail["status"] == "failed" and message in detail["steps"][0]["error"]
    assert "timed out after None" not in detail["steps"][0]["error"]
    assert (await step_row(service.storage, tenant, task["id"], "a"))["crash_count"] == 0
    after = await service.submit(tenant, pipeline_id + "ok", "o", "the host still runs", {})
    assert (await service.wait(tenant, after["id"]))["status"] == "succeeded"


# ---- a late end of an old run never touches the new run of the same step (#18.9) ---------------
async def test_an_old_run_ending_after_its_step_was_reclaimed_leaves_the_new_run_tracked(new_service, database,
                                                                                        tenant, pipeline_id,
                                                                                        step_type):
    runs, old_may_end, new_cancelled = [], asyncio.Event(), asyncio.Event()

    async def handler(tenant_id, task_id, step_name, input_data, config):
        run = len(runs) + 1
        runs.append(run)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if run == 1:
                await old_may_end.wait()  # the old run takes its time to end
            else:
                new_cancelled.set()
            raise
    handlers = {step_type: handler}
    service = await new_service(database, handlers, concurrency=2)
    await service.start()
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "re-claimed", {})
    await until(lambda: runs == [1])
    await service.modify(tenant, task["id"], {}, rerun_from="a")  # interrupts run 1, re-plans the step
    await until(lambda: runs == [1, 2], what="the re-claim")
    old_may_end.set()
    await until(lambda: len(service.executor._running) == 1, what="the old run to end")
    await service.cancel(tenant, task["id"])  # must reach the new run
    await asyncio.wait_for(new_cancelled.wait(), timeout=2)
    await until(lambda: not service.executor._running, what="the new run to end")
    await service.stop()


# ---- every outcome in the log, with its fields; unexpected errors with their traceback (#12) ----
async def test_step_outcomes_are_logged_with_their_fields_and_traceback(service, tenant, pipeline_id, step_type,
                                                                        caplog):
    def broken_handler(*args):
        raise ValueError("no such model")
    service.register_handler(step_type, broken_handler)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"retries": 1}}])
    with caplog.at_level(logging.DEBUG, logger="pipeline_service.engine.executor"):
        task = await service.submit(tenant, pipeline_id, "o", "logged", {})
        assert (await service.wait(tenant, task["id"]))["status"] == "failed"
    mine = [r for r in caplog.records if getattr(r, "task", None) == task["id"]]
    assert [(r.levelname, r.attempt) for r in mine] == [
        ("DEBUG", 1), ("INFO", 1), ("DEBUG", 2), ("WARNING", 2)]
    assert all((r.tenant, r.step) == (tenant, "a") for r in mine)
    assert "retried in 0s: ValueError: no such model" in mine[1].getMessage()
    assert "in broken_handler" in mine[3].getMessage() and "ValueError: no such model" in mine[3].getMessage()


async def test_an_unexpected_error_in_the_dispatch_loop_is_logged_with_its_traceback(service, step_type, caplog):
    claim_ready, failed = service.claimer.claim_ready, []

    async def buggy_claim(*args):  # a bug, not the database: it must not read as "database trouble"
        if not failed:
            failed.append(1)
            raise KeyError("a bug")
        return await claim_ready(*args)
    service.claimer.claim_ready = buggy_claim
    service.register_handler(step_type, lambda *args: {})  # something to claim for
    with caplog.at_level(logging.ERROR, logger="pipeline_service.engine.executor"):
        service.executor.wake()
        await until(lambda: failed)
        await until(lambda: any("unexpected error" in r.getMessage() for r in caplog.records))
    record = next(r for r in caplog.records if "unexpected error" in r.getMessage())
    assert record.exc_info and record.exc_info[0] is KeyError
    assert not any("database trouble" in r.getMessage() for r in caplog.records)


async def test_a_control_change_stops_only_the_claim_it_saw_not_a_later_one(new_service, database, tenant,
                                                                            pipeline_id, step_type):
    """cancel/modify name the claim (step id, attempt) they saw: a later claim of the
    same step (re-claimed between their commit and the interrupt) keeps running."""
    cancelled = []

    async def long_step(*args):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
    handlers = {step_type: long_step}
    service = await new_service(database, handlers)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    await service.submit(tenant, pipeline_id, "o", "re-claimed", {})
    await until(lambda: service.executor._running)
    claim = next(iter(service.executor._running))
    service.executor.interrupt([(claim.id, claim.attempt - 1)])  # an earlier run of the same step
    await asyncio.sleep(0)
    assert claim not in service.executor._revoked and not cancelled  # interrupt decides at once
    service.executor.interrupt([(claim.id, claim.attempt)])
    await until(lambda: cancelled)
    await service.stop(timeout=1)
