"""Human control on MariaDB and SQLite: pause, resume, cancel, modify and cascade re-runs."""
import asyncio
import threading
import time

import pytest

from pipeline_service import InvalidInputError, InvalidStateError, NotFoundError
from conftest import Polls, until


class Line:
    """Handlers that record every call per step; a step may be told to wait on a gate or fail."""

    def __init__(self, service, step_type, delay=0.0):
        self.calls, self.gates, self.failing, self.cancelled = [], {}, set(), []
        self.delay = delay
        service.register_handler(step_type, self.handler)

    async def handler(self, tenant_id, task_id, step_name, input_data, config):
        call = {"step": step_name, "start": time.monotonic(), "input": input_data}
        self.calls.append(call)
        try:
            if step_name in self.gates:
                await self.gates[step_name].wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append((step_name, time.monotonic()))
            raise
        call["end"] = time.monotonic()
        if step_name in self.failing:
            raise RuntimeError(f"{step_name} is broken")
        return {"step": step_name, "upstream": {k: v.get("value", v) for k, v in input_data["upstream"].items()},
                "value": f"{step_name}{len([c for c in self.calls if c['step'] == step_name])}"}

    def count(self, step):
        return sum(1 for c in self.calls if c["step"] == step)

    def gate(self, step):
        self.gates[step] = asyncio.Event()
        return self.gates[step]


async def linear(service, pipeline_id, step_type, names="abcd"):
    await service.define_pipeline(pipeline_id, [
        {"step_name": n, "step_type": step_type, **({"depends_on": [names[i - 1]]} if i else {})}
        for i, n in enumerate(names)])


async def test_pause_mid_run_starts_nothing_until_resume(stepper, tenant, pipeline_id, step_type):
    line = Line(stepper, step_type)
    gate = line.gate("a")
    await linear(stepper, pipeline_id, step_type, "abc")
    task = await stepper.submit(tenant, pipeline_id, "o", "pause", {})
    first_round = asyncio.create_task(stepper.executor.run_once())
    await until(lambda: line.count("a") == 1)
    paused = await stepper.pause(tenant, task["id"])
    assert paused["status"] == "paused"
    gate.set()  # the running step finishes while paused: its output is kept
    assert [o.output["value"] for o in (await first_round).outcomes] == ["a1"]
    assert (await stepper.executor.run_once()).claims == ()  # nothing starts while paused
    detail = await stepper.detail(tenant, task["id"])
    assert [s["status"] for s in detail["steps"]] == ["succeeded", "pending", "pending"]
    assert detail["status"] == "paused" and line.count("b") == 0
    assert (await stepper.pause(tenant, task["id"]))["status"] == "paused"  # again: a no-op
    assert (await stepper.resume(tenant, task["id"]))["status"] == "running"
    assert [[c.step_name for c in (await stepper.executor.run_once()).claims] for _ in "bc"] == [["b"], ["c"]]
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
    assert [line.count(s) for s in "abc"] == [1, 1, 1]
    b = next(c for c in line.calls if c["step"] == "b")
    assert b["input"]["upstream"]["a"]["value"] == "a1"


async def test_pause_before_start_and_resume(stepper, tenant, pipeline_id, step_type):
    line = Line(stepper, step_type)
    await linear(stepper, pipeline_id, step_type, "ab")
    task = await stepper.submit(tenant, pipeline_id, "o", "p", {})  # nothing claims: the task stays pending
    assert task["status"] == "pending"
    assert (await stepper.pause(tenant, task["id"]))["status"] == "paused"
    assert (await stepper.executor.run_once()).claims == ()
    assert line.calls == []
    await stepper.resume(tenant, task["id"])
    assert [[c.step_name for c in (await stepper.executor.run_once()).claims] for _ in "ab"] == [["a"], ["b"]]
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded" and detail["started_at"] is not None


async def test_cancel_stops_a_sleeping_handler_and_stores_nothing(stepper, tenant, pipeline_id, step_type):
    line = Line(stepper, step_type)
    line.gate("b")  # b would sleep "forever" (30 s in the words)
    await linear(stepper, pipeline_id, step_type, "abc")
    task = await stepper.submit(tenant, pipeline_id, "o", "cancel", {})
    await stepper.executor.run_once()  # a
    second_round = asyncio.create_task(stepper.executor.run_once())  # b, held at its gate
    await until(lambda: line.count("b") == 1)
    asked = time.monotonic()
    summary = await stepper.cancel(tenant, task["id"])
    assert summary["status"] == "cancelled" and summary["finished_at"]
    assert (await asyncio.wait_for(second_round, 1.0)).outcomes == ()  # b was stopped: nothing recorded
    assert line.cancelled[0][0] == "b" and line.cancelled[0][1] - asked < 1.0
    assert (await stepper.executor.run_once()).claims == ()  # c never starts
    detail = await stepper.detail(tenant, task["id"])
    assert [s["status"] for s in detail["steps"]] == ["succeeded", "cancelled", "cancelled"]
    assert line.count("c") == 0
    node = await stepper.node(tenant, task["id"], "b")
    assert node["output"] is None and [v["kind"] for v in node["versions"]] == ["input"]
    assert (await stepper.cancel(tenant, task["id"]))["status"] == "cancelled"  # again: a no-op
    with pytest.raises(InvalidStateError, match="cancelled"):
        await stepper.resume(tenant, task["id"])
    with pytest.raises(InvalidStateError, match="cancelled"):
        await stepper.modify(tenant, task["id"], {}, rerun_from="a")
    after = await stepper.detail(tenant, task["id"])
    assert after["status"] == "cancelled" and after["steps"] == detail["steps"]


async def test_cancel_discards_what_a_sync_handler_returns_later(stepper, tenant, pipeline_id, step_type):
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def slow(tenant_id, task_id, step_name, input_data, config):
        started.set()
        release.wait(10)  # returns only when the test lets it: after the cancel
        returned.set()
        return {"late": True}
    stepper.register_handler(step_type, slow)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await stepper.submit(tenant, pipeline_id, "o", "sync cancel", {})
    first_round = asyncio.create_task(stepper.executor.run_once())
    try:
        await until(started.is_set)
        await stepper.cancel(tenant, task["id"])
        # the round ends without its thread (a plain function cannot be stopped) and records nothing
        assert (await asyncio.wait_for(first_round, 5)).outcomes == ()
    finally:
        release.set()
    await until(returned.is_set)  # what the thread returned is dropped
    assert (await stepper.executor.run_once()).claims == ()
    node = await stepper.node(tenant, task["id"], "a")
    assert node["output"] is None and node["step"]["status"] == "cancelled"


async def test_edit_a_middle_output_reruns_only_its_downstream(service, tenant, pipeline_id, step_type):
    line = Line(service, step_type)
    await linear(service, pipeline_id, step_type, "abcd")
    task = await service.submit(tenant, pipeline_id, "o", "edit", {"p": 1})
    await service.wait(tenant, task["id"])
    result = await service.modify(tenant, task["id"], {"b": {"output": {"value": "B-edited"}}})
    assert result["rerun"] == ["c", "d"] and result["status"] == "running"
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert [line.count(s) for s in "abcd"] == [1, 1, 2, 2]
    b = await service.node(tenant, task["id"], "b")
    assert b["version"] == 2 and b["output"] == {"value": "B-edited"}
    assert [(v["kind"], v["version"], v["source"]) for v in b["versions"]] == [
        ("input", 1, "engine"), ("output", 1, "engine"), ("output", 2, "manual")]
    assert (await service.node(tenant, task["id"], "b", version=1))["output"]["value"] == "b1"
    c = await service.node(tenant, task["id"], "c")
    assert c["version"] == 2 and c["input"]["upstream"]["b"] == {"value": "B-edited"}
    assert c["input_version"] == 2
    first_c = await service.node(tenant, task["id"], "c", version=1)
    assert first_c["input"]["upstream"]["b"]["value"] == "b1"  # the input that produced version 1


async def test_edit_an_input_is_used_as_is(service, tenant, pipeline_id, step_type):
    line = Line(service, step_type)
    await linear(service, pipeline_id, step_type, "abc")
    task = await service.submit(tenant, pipeline_id, "o", "edit input", {"p": 1})
    await service.wait(tenant, task["id"])
    new_input = {"params": {"p": 2}, "upstream": {"b": {"value": "typed by a person"}}}
    result = await service.modify(tenant, task["id"], {"c": {"input": new_input}})
    assert result["rerun"] == ["c"]
    await service.wait(tenant, task["id"])
    c_calls = [c for c in line.calls if c["step"] == "c"]
    assert len(c_calls) == 2 and c_calls[1]["input"] == new_input
    node = await service.node(tenant, task["id"], "c")
    assert node["input"] == new_input and node["version"] == 2
    assert ("input", 2, "manual") in [(v["kind"], v["version"], v["source"]) for v in node["versions"]]
    # every version with its lineage; any input version can be read, the first still as the engine built it
    lineage = {(v["kind"], v["version"]): v["lineage"] for v in node["versions"]}
    assert lineage[("output", 1)] == {"input_version": 1} and lineage[("output", 2)] == {"input_version": 2}
    assert lineage[("input", 1)] == {"b": 1}
    first = await service.node(tenant, task["id"], "c", input_version=1)
    assert first["input_version"] == 1 and first["input"]["upstream"]["b"]["value"] == "b1" and first["version"] == 2
    with pytest.raises(NotFoundError, match="has no input version 3"):
        await service.node(tenant, task["id"], "c", input_version=3)


async def test_retry_from_a_failed_step_after_fixing_the_cause(service, tenant, pipeline_id, step_type):
    line = Line(service, step_type)
    line.failing.add("b")
    await linear(service, pipeline_id, step_type, "abc")
    task = await service.submit(tenant, pipeline_id, "o", "retry", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "failed" and [s["status"] for s in detail["steps"]] == [
        "succeeded", "failed", "skipped"]
    line.failing.clear()  # the cause is fixed
    result = await service.modify(tenant, task["id"], {}, rerun_from="b")
    assert result["rerun"] == ["b", "c"] and result["error"] is None
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded" and detail["error"] is None
    assert [line.count(s) for s in "abc"] == [1, 2, 1]
    assert detail["steps"][1]["attempt"] == 1  # the retry budget starts again


async def test_modify_while_a_downstream_step_is_running(service, tenant, pipeline_id, step_type):
    line = Line(service, step_type)
    await linear(service, pipeline_id, step_type, "abc")
    gate = line.gate("c")
    task = await service.submit(tenant, pipeline_id, "o", "busy", {})
    await until(lambda: line.count("c") == 1)
    result = await service.modify(tenant, task["id"], {"a": {"output": {"value": "A2"}}})
    assert result["rerun"] == ["b", "c"]
    await until(lambda: line.cancelled)
    assert line.cancelled[0][0] == "c"
    gate.set()
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    c = await service.node(tenant, task["id"], "c")
    assert c["input"]["upstream"]["b"]["upstream"]["a"] == "A2"
    assert [v["version"] for v in c["versions"] if v["kind"] == "output"] == [1]  # the first run stored nothing


async def test_modify_racing_pause(service, tenant, pipeline_id, step_type):
    line = Line(service, step_type)
    await linear(service, pipeline_id, step_type, "abc")
    task = await service.submit(tenant, pipeline_id, "o", "race", {})
    await service.wait(tenant, task["id"])
    paused, modified = await asyncio.gather(
        pause_when_running(service, tenant, task["id"]),
        service.modify(tenant, task["id"], {"a": {"output": {"value": "A2"}}}))
    assert modified["rerun"] == ["b", "c"]
    detail = await service.wait(tenant, task["id"])  # paused, or run to its end
    if detail["status"] == "paused":  # the pause landed: nothing may run until resume
        # a run claimed before the pause may still end (and be recorded): wait for no running step
        await until(lambda: _none_running(service, tenant, task["id"]), what="the runs claimed before the pause end")
        runs_while_paused = [line.count(s) for s in "bc"]
        await Polls(service).more(2)  # two chances for the loop to start one
        assert [line.count(s) for s in "bc"] == runs_while_paused
        await service.resume(tenant, task["id"])
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert (await service.node(tenant, task["id"], "c"))["input"]["upstream"]["b"]["upstream"]["a"] == "A2"


async def _none_running(service, tenant, task_id):
    return not any(s["status"] == "running" for s in (await service.detail(tenant, task_id))["steps"])


async def pause_when_running(service, tenant, task_id):
    """Pause as soon as the modify has made the task running again (or fail trying for 2 s)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            return await service.pause(tenant, task_id)
        except InvalidStateError:  # still succeeded: the modify has not landed yet
            await asyncio.sleep(0)
    raise AssertionError("the task never became pausable")


async def test_modify_a_paused_task_keeps_it_paused(stepper, tenant, pipeline_id, step_type):
    line = Line(stepper, step_type)
    gate = line.gate("b")
    await linear(stepper, pipeline_id, step_type, "abc")
    task = await stepper.submit(tenant, pipeline_id, "o", "paused edit", {})
    await stepper.executor.run_once()  # a
    second_round = asyncio.create_task(stepper.executor.run_once())  # b, held at its gate
    await until(lambda: line.count("b") == 1)
    await stepper.pause(tenant, task["id"])
    result = await stepper.modify(tenant, task["id"], {"a": {"output": {"value": "A2"}}})
    assert result["status"] == "paused" and result["rerun"] == ["b", "c"]
    gate.set()
    assert (await second_round).outcomes == ()  # the run of b the modify re-planned stores nothing
    assert (await stepper.executor.run_once()).claims == ()  # paused: nothing starts
    assert line.count("c") == 0 and (await stepper.detail(tenant, task["id"]))["status"] == "paused"
    await stepper.resume(tenant, task["id"])
    assert [[c.step_name for c in (await stepper.executor.run_once()).claims] for _ in "bc"] == [["b"], ["c"]]
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
    assert (await stepper.node(tenant, task["id"], "c"))["input"]["upstream"]["b"]["upstream"]["a"] == "A2"


@pytest.mark.parametrize("updates, rerun_from, message", [
    ({"zz": {"output": {}}}, None, "unknown step 'zz'"),
    ({}, "zz", "unknown step 'zz'"),
    ({"a": {"output": [1]}}, None, "must be a JSON object"),
    ({"a": {"outptu": {}}}, None, "must be {'output'"),
    ({"a": "text"}, None, "must be {'output'"),
    ({}, None, "nothing to do"),
    ([], None, "updates must be a dict"),
])
async def test_bad_modify_changes_nothing(service, tenant, pipeline_id, step_type, updates, rerun_from, message):
    Line(service, step_type)
    await linear(service, pipeline_id, step_type, "ab")
    task = await service.submit(tenant, pipeline_id, "o", "bad", {})
    before = await service.wait(tenant, task["id"])
    with pytest.raises(InvalidInputError, match=message):
        await service.modify(tenant, task["id"], updates, rerun_from)
    after = await service.detail(tenant, task["id"])
    assert after == before
    assert len((await service.node(tenant, task["id"], "a"))["versions"]) == 2


async def test_control_of_another_tenants_task_is_not_found(service, tenant, pipeline_id, step_type):
    Line(service, step_type)
    await linear(service, pipeline_id, step_type, "ab")
    task = await service.submit(tenant, pipeline_id, "o", "mine", {})
    await service.wait(tenant, task["id"])
    other = tenant + "-b"
    for op in (service.pause(other, task["id"]), service.resume(other, task["id"]),
               service.cancel(other, task["id"]), service.modify(other, task["id"], {}, rerun_from="a")):
        with pytest.raises(NotFoundError):
            await op
    assert (await service.detail(tenant, task["id"]))["status"] == "succeeded"


async def test_resume_of_a_finished_task_is_refused(service, tenant, pipeline_id, step_type):
    Line(service, step_type)
    await linear(service, pipeline_id, step_type, "a")
    task = await service.submit(tenant, pipeline_id, "o", "done", {})
    await service.wait(tenant, task["id"])
    with pytest.raises(InvalidStateError, match="succeeded"):
        await service.resume(tenant, task["id"])
    with pytest.raises(InvalidStateError, match="succeeded"):
        await service.pause(tenant, task["id"])


@pytest.mark.parametrize("updates, rerun_from, runs", [
    ({}, "a", {"a": 1, "b": 1, "c": 1}),                              # retry from the root
    ({"a": {"output": {"value": "typed"}}}, None, {"a": 0, "b": 1, "c": 1}),
    ({"a": {"input": {"params": {"p": 2}, "upstream": {}}}}, None, {"a": 1, "b": 1, "c": 1}),
])
async def test_modify_of_a_task_not_started_yet_runs_it(service, tenant, pipeline_id, step_type, updates,
                                                       rerun_from, runs):
    line = Line(service, step_type)
    await linear(service, pipeline_id, step_type, "abc")
    await service.executor.stop()  # nothing claims: the task stays pending
    service.autostart = False
    task = await service.submit(tenant, pipeline_id, "o", "not started", {"p": 1})
    result = await service.modify(tenant, task["id"], updates, rerun_from)
    assert result["status"] == ("running" if "output" in updates.get("a", {}) else "pending")
    await service.start()
    detail = await service.wait(tenant, task["id"], timeout=10)
    assert detail["status"] == "succeeded", detail
    assert {s: line.count(s) for s in "abc"} == runs
    b_input = next(c for c in line.calls if c["step"] == "b")["input"]
    if "output" in updates.get("a", {}):
        assert b_input["upstream"]["a"] == {"value": "typed"}
    if "input" in updates.get("a", {}):
        assert next(c for c in line.calls if c["step"] == "a")["input"] == updates["a"]["input"]
