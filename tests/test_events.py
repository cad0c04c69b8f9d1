"""Lifecycle events (README, "Events") on MariaDB and SQLite: delivered after commit, in order,
never making the engine wait; a failing callback is logged; a rolled-back change tells nothing."""
import asyncio
import base64
import logging
import os
import sqlite3

import pytest

import pipeline_service
from pipeline_service import ConfigurationError, InvalidInputError, PipelineService, api
from pipeline_service.engine.events import EVENTS, Events
from conftest import until
from test_executor_adversity import run_together


class Log:
    """A subscriber keeping every event it is given, of one task (or of all)."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, task_id):
        return [e for e in self.events if e["task_id"] == task_id]

    def names(self, task_id, step_name=None):
        return [e["event"] for e in self.of(task_id) if step_name is None or e.get("step_name") == step_name]

    def has(self, task_id, name):
        return lambda: name in self.names(task_id)


def diamond(step_type):
    return [{"step_name": "a", "step_type": step_type},
            {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
            {"step_name": "c", "step_type": step_type, "depends_on": ["a"]},
            {"step_name": "d", "step_type": step_type, "depends_on": ["b", "c"]}]


def fields_of(event):
    return set(event) - {"event", "at", "tenant_id", "task_id"}


async def test_every_event_of_a_diamond_in_order(service, tenant, pipeline_id, step_type):
    seen = service.on("*", Log())
    attempts = {}

    async def handler(tenant_id, task_id, step_name, input_data, config):
        attempts[step_name] = attempts.get(step_name, 0) + 1
        if step_name == "b" and attempts["b"] == 1:
            raise RuntimeError("b, first time")
        return {"by": step_name}
    service.register_handler(step_type, handler)
    steps = diamond(step_type)
    steps[1]["config"] = {"retries": 1}
    await service.define_pipeline(pipeline_id, steps)
    task = await service.submit(tenant, pipeline_id, "o", "diamond", {})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    await until(seen.has(task["id"], "task.succeeded"))
    events = seen.of(task["id"])
    names = [e["event"] for e in events]
    assert names[0] == "task.submitted" and names[-1] == "task.succeeded"
    assert names.count("task.succeeded") == 1 and len(names) == 12
    for step in "acd":
        assert seen.names(task["id"], step) == ["step.started", "step.succeeded"], step
    assert seen.names(task["id"], "b") == ["step.started", "step.retrying", "step.started", "step.succeeded"]
    at = {(e["event"], e.get("step_name"), e.get("attempt")): i for i, e in enumerate(events)}
    assert at[("step.succeeded", "a", 1)] < min(at[("step.started", "b", 1)], at[("step.started", "c", 1)])
    assert max(at[("step.succeeded", "b", 2)], at[("step.succeeded", "c", 1)]) < at[("step.started", "d", 1)]
    # every payload carries the fields README documents, and only those
    for event in events:
        assert (event["tenant_id"], event["task_id"]) == (tenant, task["id"]) and event["at"]
        assert fields_of(event) == set(EVENTS[event["event"]]), event
    retrying = next(e for e in events if e["event"] == "step.retrying")
    assert retrying["error"] == "RuntimeError: b, first time" and retrying["retry_delay"] == 0
    assert "in handler" in retrying["traceback"]
    assert events[0]["pipeline_id"] == pipeline_id and events[0]["owner_id"] == "o"
    assert [e["output_version"] for e in events if e["event"] == "step.succeeded"] == [1, 1, 1, 1]


async def test_a_failed_task_tells_which_step_failed(service, tenant, pipeline_id, step_type):
    seen = service.on("*", Log())

    def broken(*args):
        raise ValueError("the model refused")
    service.register_handler(step_type, broken)
    await service.define_pipeline(pipeline_id, diamond(step_type))
    task = await service.submit(tenant, pipeline_id, "o", "fails", {})
    assert (await service.wait(tenant, task["id"]))["status"] == "failed"
    await until(seen.has(task["id"], "task.failed"))
    assert seen.names(task["id"]) == ["task.submitted", "step.started", "step.failed", "task.failed"]
    failed = seen.of(task["id"])[2]
    assert failed["error"] == "ValueError: the model refused" and "in broken" in failed["traceback"]
    assert "step 'a' failed: ValueError: the model refused" in seen.of(task["id"])[3]["error"]


async def test_a_failing_callback_is_logged_and_changes_nothing(service, tenant, pipeline_id, step_type, caplog):
    calls, seen = [], Log()

    def failing(event):
        calls.append(event["event"])
        raise KeyError("a bug in the host")
    service.on("*", failing)
    service.on("*", seen)
    service.register_handler(step_type, lambda *args: {})
    await service.define_pipeline(pipeline_id, diamond(step_type))
    with caplog.at_level(logging.ERROR, logger="pipeline_service.engine.events"):
        task = await service.submit(tenant, pipeline_id, "o", "logged", {})
        assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
        await until(lambda: calls[-1:] == ["task.succeeded"])
    assert calls == seen.names(task["id"]) and len(calls) == 10  # called for every event all the same
    failures = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert len(failures) == 10 and all(r.exc_info and r.exc_info[0] is KeyError for r in failures)
    assert task["id"] in failures[0].getMessage()


async def test_a_slow_callback_never_slows_the_engine(service, tenant, pipeline_id, step_type):
    """A callback stuck on its first event: the task runs to its end meanwhile, another
    subscriber sees every event at once, and the stuck one gets them all, in order, later."""
    release, slow_seen, fast = asyncio.Event(), [], Log()

    async def slow(event):
        await release.wait()
        slow_seen.append(event["event"])
    service.on("*", slow)
    service.on("*", fast)
    service.register_handler(step_type, lambda *args: {})
    chain = [{"step_name": f"s{i}", "step_type": step_type, **({"depends_on": [f"s{i - 1}"]} if i else {})}
             for i in range(8)]
    await service.define_pipeline(pipeline_id, chain)
    task = await service.submit(tenant, pipeline_id, "o", "slow subscriber", {})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    await until(fast.has(task["id"], "task.succeeded"))
    assert slow_seen == [] and len(fast.names(task["id"])) == 18
    release.set()
    await until(lambda: len(slow_seen) == 18)
    assert slow_seen == fast.names(task["id"])


async def test_pause_resume_cancel_and_modify_are_told(service, tenant, pipeline_id, step_type):
    seen, gates = service.on("*", Log()), {}

    async def gated(tenant_id, task_id, step_name, input_data, config):
        gates.setdefault(step_name, asyncio.Event())
        await gates[step_name].wait()
        return {"by": step_name}
    service.register_handler(step_type, gated)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type},
                                                {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await service.submit(tenant, pipeline_id, "o", "controlled", {})
    task_id = task["id"]
    await until(lambda: "a" in gates)
    await service.pause(tenant, task_id)
    await service.pause(tenant, task_id)  # already paused: nothing happens, nothing is told
    gates["a"].set()
    await until(seen.has(task_id, "step.succeeded"))
    await service.resume(tenant, task_id)
    await until(lambda: "b" in gates)
    await service.cancel(tenant, task_id)
    await until(seen.has(task_id, "task.cancelled"))
    await service.cancel(tenant, task_id)  # already cancelled: nothing happens, nothing is told
    await service.events.drain()
    assert seen.names(task_id) == ["task.submitted", "step.started", "task.paused", "step.succeeded",
                                   "task.resumed", "step.started", "task.cancelled"]


async def test_a_modify_is_told_before_the_run_it_causes(service, tenant, pipeline_id, step_type):
    seen = service.on("*", Log())
    service.register_handler(step_type, lambda *args: {"n": 1})
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type},
                                                {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await service.submit(tenant, pipeline_id, "o", "modified", {})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    await until(seen.has(task["id"], "task.succeeded"))
    seen.events.clear()
    await service.modify(tenant, task["id"], {"a": {"output": {"n": 2}}})
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    await until(seen.has(task["id"], "task.succeeded"))
    assert seen.names(task["id"]) == ["task.modified", "step.started", "step.succeeded", "task.succeeded"]
    assert seen.of(task["id"])[0]["rerun"] == ["b"]


async def test_a_rolled_back_transaction_tells_nothing(storage):
    events, seen = Events(), Log()
    events.on("task.paused", seen)

    class Refused(Exception):
        pass
    with pytest.raises(Refused):
        async with storage.transaction() as tx:
            events.at_commit(tx, "task.paused", "t", "rolled-back")
            raise Refused()
    async with storage.transaction() as tx:
        events.at_commit(tx, "task.paused", "t", "committed")
    await until(lambda: seen.events)
    await events.drain()
    assert [e["task_id"] for e in seen.events] == ["committed"]


async def test_a_batch_the_database_refuses_tells_each_outcome_once(tmp_path, tenant, pipeline_id, step_type):
    """The batch rolls back and its outcomes are recorded one by one (SQLite's length limit,
    lowered here): each step is told once, as it ended in the end."""
    service = PipelineService(f"sqlite:///{tmp_path / 'limited.db'}", poll_interval=0.1)
    await service.storage.create_missing_tables(include_reference=True)
    await service.start()
    try:
        seen = service.on("*", Log())
        conn = service.storage.connector._sor.conn  # the one aiosqlite connection
        await conn._execute(conn._conn.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, 100_000)
        # text no compressor can shrink below the limit (random base64), so its row is refused
        unstorable = base64.b64encode(os.urandom(150_000)).decode("ascii")
        results = {tenant: {"text": unstorable}, **{f"{tenant}-ok{i}": {"fine": i} for i in range(3)}}
        ended = await run_together(service, pipeline_id, step_type, results)
        tasks = {t: detail["id"] for t, detail in ended.items()}
        for task_id in tasks.values():
            await until(lambda: seen.names(task_id)[-1:] in (["task.succeeded"], ["task.failed"]))
        assert seen.names(tasks[tenant]) == ["task.submitted", "step.started", "step.failed", "task.failed"]
        for t in results:
            if t != tenant:
                assert seen.names(tasks[t]) == ["task.submitted", "step.started", "step.succeeded",
                                                "task.succeeded"], t
    finally:
        await service.stop()


def test_subscribing_to_an_unknown_event_is_refused():
    events = Events()
    with pytest.raises(InvalidInputError, match="event must be one of"):
        events.on("task.finished", print)
    with pytest.raises(InvalidInputError, match="not callable"):
        events.on("task.failed", "print")
    assert not events.wanted("task.failed")


async def test_off_stops_the_calls(service, tenant, pipeline_id, step_type):
    kept, dropped = Log(), Log()
    service.on("task.submitted", kept)
    service.on("task.submitted", dropped)
    service.off("task.submitted", dropped)
    service.register_handler(step_type, lambda *args: {})
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "off", {})
    await until(kept.has(task["id"], "task.submitted"))
    await service.events.drain()
    assert dropped.events == []


async def test_pipeline_on_reaches_the_default_service_built_later_and_the_next_one(tmp_path, tenant, pipeline_id):
    """A host subscribes in its init function, before the default service exists; a later
    configure() (after shutdown) builds the next service with the same subscriptions."""
    seen = Log()
    pipeline_service.pipeline_on("task.submitted", seen)
    try:
        for name in ("first.db", "second.db"):
            service = api.configure(f"sqlite:///{tmp_path / name}", autostart=False, require_handlers=False)
            await service.storage.create_missing_tables(include_reference=True)
            await pipeline_service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": "nobody-here"}])
            task = await pipeline_service.pipeline_submit(tenant, pipeline_id, "o")
            await until(seen.has(task["id"], "task.submitted"))
            await api.shutdown()
        with pytest.raises(ConfigurationError, match="pipeline_on"):
            api.configure(f"sqlite:///{tmp_path / 'x.db'}", events=Events())
    finally:
        pipeline_service.pipeline_off("task.submitted", seen)
        await api.shutdown()
    assert len(seen.events) == 2
