"""The engine end to end on MariaDB and SQLite: submit, execute, read back."""
import asyncio
import json
import threading
import time

import pytest

from pipeline_service import HandlerError, InvalidInputError, NotFoundError
from pipeline_service.engine.records import Outcome
from pipeline_service.ids import new_id, now_ms
from conftest import Polls, until


def recorder(calls, result=None, delay=0.0):
    async def handler(tenant_id, task_id, step_name, input_data, config):
        call = {"step": step_name, "start": time.monotonic(), "input": input_data, "config": config}
        calls.append(call)
        n = len(calls)
        if delay:
            await asyncio.sleep(delay)
        call["end"] = time.monotonic()
        return result if result is not None else {"by": step_name, "n": n}
    return handler


async def step_until_idle(stepper, limit=20):
    """Step the engine by hand until a round claims nothing: the step names each round claimed."""
    rounds = []
    for _ in range(limit):
        claims = (await stepper.executor.run_once()).claims
        if not claims:
            return rounds
        rounds.append(sorted(c.step_name for c in claims))
    raise AssertionError(f"still claiming after {limit} rounds: {rounds[-3:]}")


TRICKY = "草稿 'quoted' \"double\" back\\slash \n\r\t \x1a nul\u0000 😀 é %s ${x}$ " * 40


async def test_params_and_a_config_of_any_text_reach_the_handler_unchanged(stepper, tenant, pipeline_id, step_type):
    # on MySQL they are sent in base64 (queries.sql: {text:params}, {text:config}), on SQLite as they are
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"prompt": TRICKY}}])
    task = await stepper.submit(tenant, pipeline_id, "o", "any text", {"brief": TRICKY})
    stepper.caches.plans.clear()  # the step's config and the task's params as stored, not as submitted
    await stepper.executor.run_once()
    assert calls[0]["config"] == {"prompt": TRICKY} and calls[0]["input"]["params"] == {"brief": TRICKY}
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded" and detail["params"] == {"brief": TRICKY}


async def count_tasks(service, tenant):
    return (await service.list(tenant))["total"]


async def test_linear_pipeline_passes_outputs_downstream(stepper, tenant, pipeline_id, step_type):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"model": "m1"}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "c", "step_type": step_type, "depends_on": "b"},
    ])
    task = await stepper.submit(tenant, pipeline_id, "owner-1", "linear", {"topic": "x"})
    assert task["status"] == "pending" and task["progress"]["total"] == 3
    assert await step_until_idle(stepper) == [["a"], ["b"], ["c"]]
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded" and detail["error"] is None
    assert detail["progress"] == {"total": 3, "succeeded": 3, "running": 0, "waiting": 0, "failed": 0, "skipped": 0}
    assert [c["step"] for c in calls] == ["a", "b", "c"]
    assert calls[0]["input"] == {"params": {"topic": "x"}, "upstream": {}}
    assert calls[0]["config"] == {"model": "m1"}
    assert calls[1]["input"]["upstream"] == {"a": {"by": "a", "n": 1}}
    assert calls[2]["input"]["upstream"] == {"b": {"by": "b", "n": 2}}
    assert [s["step_name"] for s in detail["steps"]] == ["a", "b", "c"]
    assert detail["params"] == {"topic": "x"} and detail["finished_at"] and detail["started_at"]


async def test_diamond_joins_both_branches(service, tenant, pipeline_id, step_type):
    calls = []
    service.register_handler(step_type, recorder(calls, delay=0.05))
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "c", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "d", "step_type": step_type, "depends_on": ["b", "c"]},
    ])
    task = await service.submit(tenant, pipeline_id, "o", "diamond", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    by_step = {c["step"]: c for c in calls}
    assert len(calls) == 4
    assert set(by_step["d"]["input"]["upstream"]) == {"b", "c"}
    assert by_step["d"]["start"] >= max(by_step["b"]["end"], by_step["c"]["end"])
    # b and c are independent: they ran at the same time
    assert by_step["b"]["start"] < by_step["c"]["end"] and by_step["c"]["start"] < by_step["b"]["end"]


async def test_fifty_wide_fan_out_runs_concurrently(service, tenant, pipeline_id, step_type):
    calls = []
    service.register_handler(step_type, recorder(calls, delay=0.3))
    steps = [{"step_name": "root", "step_type": step_type}]
    steps += [{"step_name": f"w{i:02d}", "step_type": step_type, "depends_on": ["root"]} for i in range(50)]
    steps += [{"step_name": "join", "step_type": step_type, "depends_on": [f"w{i:02d}" for i in range(50)]}]
    await service.define_pipeline(pipeline_id, steps)
    task = await service.submit(tenant, pipeline_id, "o", "fan-out", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    workers = [c for c in calls if c["step"].startswith("w")]
    assert len(workers) == 50
    # the largest number of worker handlers in flight at one instant
    events = sorted([(c["start"], 1) for c in workers] + [(c["end"], -1) for c in workers])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak >= 40, f"only {peak} of 50 independent steps overlapped"
    join = next(c for c in calls if c["step"] == "join")
    assert len(join["input"]["upstream"]) == 50


async def test_retry_then_success(service, tenant, pipeline_id, step_type):
    attempts = []

    async def flaky(tenant_id, task_id, step_name, input_data, config):
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError(f"transient #{len(attempts)}")
        return {"ok": True}
    service.register_handler(step_type, flaky)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 2, "retry_delay": 0.1}}])
    task = await service.submit(tenant, pipeline_id, "o", "flaky", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert detail["steps"][0]["attempt"] == 3 and len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.09 and attempts[2] - attempts[1] >= 0.19  # 0.1 s, then doubled


async def test_failure_after_last_retry(stepper, tenant, pipeline_id, step_type):
    calls = []
    stepper.register_handler(step_type + "-ok", recorder(calls))

    async def broken(tenant_id, task_id, step_name, input_data, config):
        calls.append({"step": step_name})
        raise ValueError("the model refused")
    stepper.register_handler(step_type + "-bad", broken)
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "bad", "step_type": step_type + "-bad", "config": {"retries": 1}},
        {"step_name": "after_bad", "step_type": step_type + "-ok", "depends_on": ["bad"]},
        {"step_name": "other", "step_type": step_type + "-ok"},
        {"step_name": "after_other", "step_type": step_type + "-ok", "depends_on": ["other"]},
    ])
    task = await stepper.submit(tenant, pipeline_id, "o", "fails", {})
    # the retry (no delay) runs in the round after the first attempt, beside the other branch
    assert await step_until_idle(stepper) == [["bad", "other"], ["after_other", "bad"]]
    detail = await stepper.detail(tenant, task["id"])
    steps = {s["step_name"]: s for s in detail["steps"]}
    assert detail["status"] == "failed"
    assert "step 'bad' failed: ValueError: the model refused" in detail["error"]
    assert [c["step"] for c in calls].count("bad") == 2  # retries: 1 -> two calls
    assert "after_bad" not in [c["step"] for c in calls]
    assert steps["bad"]["status"] == "failed" and steps["bad"]["attempt"] == 2
    assert steps["after_bad"]["status"] == "skipped"
    assert steps["other"]["status"] == steps["after_other"]["status"] == "succeeded"
    assert detail["progress"]["failed"] == 1 and detail["progress"]["succeeded"] == 2


async def test_timeout_fails_the_attempt(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([], delay=5))
    await service.define_pipeline(pipeline_id, [{"step_name": "slow", "step_type": step_type,
                                                 "config": {"timeout": 0.2}}])
    started = time.monotonic()
    task = await service.submit(tenant, pipeline_id, "o", "slow", {})
    detail = await service.wait(tenant, task["id"])
    assert time.monotonic() - started < 3
    assert detail["status"] == "failed" and "timed out after 0.2s" in detail["steps"][0]["error"]


async def test_sync_handler_runs_in_a_worker_thread(service, tenant, pipeline_id, step_type):
    threads = []

    def blocking(tenant_id, task_id, step_name, input_data, config):
        threads.append(threading.current_thread())
        time.sleep(0.05)
        return {"thread": threading.current_thread().name}
    service.register_handler(step_type, blocking)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "sync", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert threads and threads[0] is not threading.main_thread()
    node = await service.node(tenant, task["id"], "a")
    assert node["output"] == {"thread": threads[0].name}


@pytest.mark.parametrize("result, message", [
    ([1, 2], "must be a JSON object (a dict), got list"),
    ({"when": object()}, "the object at key 'when' is not JSON"),
])
async def test_unusable_results_fail_the_step(service, tenant, pipeline_id, step_type, result, message):
    async def bad(*args):
        return result
    service.register_handler(step_type, bad)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "bad result", {})
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "failed" and message in detail["steps"][0]["error"]
    assert (await service.node(tenant, task["id"], "a"))["output"] is None


async def test_missing_handler_refuses_submit_and_writes_nothing(service, tenant, pipeline_id, step_type):
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type + "-nobody"}])
    with pytest.raises(HandlerError, match=r"no handler is registered for step_type '.*-nobody' \(step 'a'\)"):
        await service.submit(tenant, pipeline_id, "o", "t", {})
    assert await count_tasks(service, tenant) == 0


async def test_a_step_no_handler_here_can_run_waits_for_one(stepper, tenant, pipeline_id, step_type):
    """An executor claims only the step types it has handlers for (another process may have it)."""
    calls = []
    stepper.register_handler(step_type + "-first", recorder(calls))
    stepper.register_handler(step_type + "-later", recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type + "-first"},
        {"step_name": "b", "step_type": step_type + "-later", "depends_on": ["a"]}])
    task = await stepper.submit(tenant, pipeline_id, "o", "t", {})
    stepper.unregister_handler(step_type + "-later")
    assert [c.step_name for c in (await stepper.executor.run_once()).claims] == ["a"]
    assert (await stepper.executor.run_once()).claims == ()  # b is ready, but nothing here runs it
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "running" and [s["status"] for s in detail["steps"]] == ["succeeded", "pending"]
    stepper.register_handler(step_type + "-later", recorder(calls))  # a process that can run it appears
    await stepper.start()  # and its loop runs b
    assert (await stepper.wait(tenant, task["id"]))["status"] == "succeeded"
    assert [c["step"] for c in calls] == ["a", "b"]


async def test_cyclic_pipeline_is_rejected_with_nothing_written(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([]))
    async with service.storage.transaction() as tx:  # rows as pipeline_core could have written them
        await tx.execute("insert_pipeline", id=pipeline_id, name="cyclic", description=None)
        for name, deps in (("a", '["c"]'), ("b", "a"), ("c", '["b"]')):
            await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id=pipeline_id, step_name=name,
                             step_type=step_type, depends_on=deps, config="", seq=1)
    with pytest.raises(InvalidInputError, match="cycle") as caught:
        await service.submit(tenant, pipeline_id, "o", "t", {})
    assert all(f"{n}" in str(caught.value) for n in "abc")
    assert await count_tasks(service, tenant) == 0


async def test_dangling_dependency_is_rejected(service, tenant, pipeline_id, step_type):
    with pytest.raises(InvalidInputError, match="step 'b' depends on unknown step 'zz'"):
        await service.define_pipeline(pipeline_id, [
            {"step_name": "a", "step_type": step_type}, {"step_name": "b", "step_type": step_type,
                                                         "depends_on": ["zz"]}])


@pytest.mark.parametrize("args, message", [
    (("", "P", "o"), "tenant_id"), ((None, "P", "o"), "tenant_id"), ((5, "P", "o"), "tenant_id"),
    (("T", "P", ""), "owner_id"), (("T", "", "o"), "pipeline_id"), (("T" * 33, "P", "o"), "at most 32"),
])
async def test_bad_ids_are_refused(service, args, message):
    with pytest.raises(InvalidInputError, match=message):
        await service.submit(*args, "title", {})


@pytest.mark.parametrize("params, message", [
    ([1], "must be a JSON object"), ("x", "must be a JSON object"), ({"a": {1, 2}}, "not JSON-serialisable"),
])
async def test_bad_params_are_refused(service, tenant, pipeline_id, step_type, params, message):
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    with pytest.raises(InvalidInputError, match=message):
        await service.submit(tenant, pipeline_id, "o", "t", params)
    assert await count_tasks(service, tenant) == 0


async def test_unknown_pipeline_is_not_found(service, tenant):
    with pytest.raises(NotFoundError, match="pipeline 'no-such-pipeline' does not exist"):
        await service.submit(tenant, "no-such-pipeline", "o", "t", {})
    assert await count_tasks(service, tenant) == 0


async def test_editing_pipeline_steps_does_not_change_a_submitted_task(service, tenant, pipeline_id, step_type):
    gate, calls = asyncio.Event(), []

    async def first(tenant_id, task_id, step_name, input_data, config):
        await gate.wait()
        return {"first": True}
    service.register_handler(step_type + "-first", first)
    service.register_handler(step_type + "-old", recorder(calls, result={"v": "old"}))
    service.register_handler(step_type + "-new", recorder(calls, result={"v": "new"}))
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type + "-first"},
        {"step_name": "b", "step_type": step_type + "-old", "depends_on": ["a"], "config": {"k": 1}}])
    task = await service.submit(tenant, pipeline_id, "o", "snapshot", {})
    await service.define_pipeline(pipeline_id, [  # pipeline_core edits the definition meanwhile
        {"step_name": "a", "step_type": step_type + "-first"},
        {"step_name": "b", "step_type": step_type + "-new", "depends_on": ["a"], "config": {"k": 2}},
        {"step_name": "extra", "step_type": step_type + "-new", "depends_on": ["b"]}])
    gate.set()
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert [s["step_name"] for s in detail["steps"]] == ["a", "b"]
    assert detail["steps"][1]["step_type"] == step_type + "-old"
    assert calls[0]["config"] == {"k": 1}
    assert (await service.node(tenant, task["id"], "b"))["output"] == {"v": "old"}


async def step_names_of(service, tenant, task):
    return [s["step_name"] for s in (await service.detail(tenant, task["id"]))["steps"]]


async def test_a_redefinition_here_reaches_the_next_submit_at_once(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    assert await step_names_of(service, tenant, await service.submit(tenant, pipeline_id, "o", "t", {})) == ["a"]
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type},
                                                {"step_name": "b", "step_type": step_type, "depends_on": "a"}])
    assert await step_names_of(service, tenant, await service.submit(tenant, pipeline_id, "o", "t", {})) == [
        "a", "b"]


async def test_an_edit_made_by_pipeline_core_reaches_new_tasks_within_the_cache_time(service, tenant, pipeline_id,
                                                                                    step_type):
    from pipeline_service.engine.caches import DEFINITION_TTL_SECONDS
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    assert await step_names_of(service, tenant, await service.submit(tenant, pipeline_id, "o", "t", {})) == ["a"]
    async with service.storage.transaction() as tx:  # pipeline_core's own pages write the rows directly
        await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id=pipeline_id, step_name="b",
                         step_type=step_type, depends_on='["a"]', config="", seq=2)
    edited = time.monotonic()

    async def a_new_task_has_b():
        return await step_names_of(service, tenant, await service.submit(tenant, pipeline_id, "o", "t", {})) == [
            "a", "b"]
    await until(a_new_task_has_b, timeout=DEFINITION_TTL_SECONDS + 10, what="the edit reaching a new task",
                interval=0.1)
    took = time.monotonic() - edited
    assert took <= DEFINITION_TTL_SECONDS + 2, f"the edit reached new tasks after {took:.1f}s"


async def test_other_tenants_task_is_not_found_everywhere(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "mine", {"secret": 1})
    await service.wait(tenant, task["id"])
    intruder = tenant + "-b"
    with pytest.raises(NotFoundError):
        await service.detail(intruder, task["id"])
    with pytest.raises(NotFoundError):
        await service.node(intruder, task["id"], "a")
    assert await service.list(intruder) == {"total": 0, "rows": []}
    assert await service.list(intruder, pipeline_id=pipeline_id) == {"total": 0, "rows": []}
    with pytest.raises(NotFoundError) as theirs:
        await service.detail(intruder, task["id"])
    with pytest.raises(NotFoundError) as nobody:
        await service.detail(intruder, "no-such-task")
    # indistinguishable from a task that does not exist
    assert str(theirs.value).replace(task["id"], "X") == str(nobody.value).replace("no-such-task", "X")


async def test_list_paging_and_filters(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([]))
    other = pipeline_id + "x"
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    await service.define_pipeline(other, [{"step_name": "a", "step_type": step_type}])
    ids = []
    for i in range(5):
        task = await service.submit(tenant, pipeline_id if i < 3 else other, "o", f"task {i}", {"i": i})
        ids.append(task["id"])
        await service.wait(tenant, task["id"])
        await asyncio.sleep(0.003)  # distinct creation times
    page1 = await service.list(tenant, page=1, rows=2)
    page3 = await service.list(tenant, page=3, rows=2)
    assert page1["total"] == 5 and [r["title"] for r in page1["rows"]] == ["task 4", "task 3"]
    assert [r["title"] for r in page3["rows"]] == ["task 0"]
    only = await service.list(tenant, pipeline_id=other)
    assert only["total"] == 2 and {r["pipeline_id"] for r in only["rows"]} == {other}
    assert (await service.list(tenant, status="succeeded"))["total"] == 5
    assert (await service.list(tenant, status="failed"))["total"] == 0
    row = page1["rows"][0]
    assert set(row) == {"id", "tenant_id", "pipeline_id", "owner_id", "title", "status", "error", "progress",
                        "created_at", "updated_at", "started_at", "finished_at", "priority", "schedule_id",
                        "scheduled_for"}
    assert row["progress"] == {"total": 1, "succeeded": 1, "running": 0, "waiting": 0, "failed": 0, "skipped": 0}
    json.dumps(page1)
    for bad in (dict(page=0), dict(rows=0), dict(rows=10_000), dict(status="done"), dict(page="1")):
        with pytest.raises(InvalidInputError):
            await service.list(tenant, **bad)


async def test_node_returns_the_input_that_produced_the_output(service, tenant, pipeline_id, step_type):
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type}, {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await service.submit(tenant, pipeline_id, "o", "node", {"q": 1})
    await service.wait(tenant, task["id"])
    node = await service.node(tenant, task["id"], "b")
    a_out = (await service.node(tenant, task["id"], "a"))["output"]
    assert node["version"] == 1 and node["output"]["by"] == "b"
    assert node["input"] == {"params": {"q": 1}, "upstream": {"a": a_out}}
    assert node["step"]["status"] == "succeeded" and node["step"]["depends_on"] == ["a"]
    assert [(v["kind"], v["version"], v["source"]) for v in node["versions"]] == [
        ("input", 1, "engine"), ("output", 1, "engine")]
    with pytest.raises(NotFoundError, match="no output version 7"):
        await service.node(tenant, task["id"], "b", version=7)
    with pytest.raises(NotFoundError, match="no step 'zz'"):
        await service.node(tenant, task["id"], "zz")
    json.dumps(node)


async def test_a_step_whose_worker_keeps_dying_fails_with_a_clear_error(make_service, database, tenant, pipeline_id,
                                                                         step_type):
    """Crash re-runs are counted apart from handler errors and bounded (max_crashes)."""
    calls = []
    service = make_service(database, poll_interval=0.1, max_crashes=2, autostart=False)
    service.register_handler(step_type, recorder(calls))
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type,
                                                 "config": {"retries": 5}}])
    task = await service.submit(tenant, pipeline_id, "o", "doomed", {})
    for crash in (1, 2):  # a worker claims the step and dies: its lease runs out at once
        claims = await service.claimer.claim_ready("ghost", 1, -1, [step_type], {}, None)
        assert [c.step_name for c in claims] == ["a"]
        recovered = await service.recorder.recover_expired(now_ms(), max_crashes=2)
        assert recovered == 1
        detail = await service.detail(tenant, task["id"])
        if crash == 1:  # run again, without using up a retry
            assert detail["steps"][0]["status"] == "pending" and detail["steps"][0]["attempt"] == 0
    assert detail["status"] == "failed" and detail["steps"][0]["status"] == "failed"
    assert "lost its worker 2 times" in detail["steps"][0]["error"]
    assert calls == []


async def test_an_expired_lease_is_taken_back_and_run_here(service, tenant, pipeline_id, step_type):
    calls = []
    service.register_handler(step_type, recorder(calls))
    await service.executor.stop()
    service.autostart = False
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await service.submit(tenant, pipeline_id, "o", "orphan", {})
    claims = await service.claimer.claim_ready("dead-worker", 1, 300, [step_type], {}, None)
    assert len(claims) == 1
    await service.start()  # the lease expires in 0.3 s; the poll finds it
    detail = await service.wait(tenant, task["id"], timeout=10)
    assert detail["status"] == "succeeded" and len(calls) == 1
    assert detail["steps"][0]["attempt"] == 1  # the crash did not use up the retry budget
    # the dead worker's late result is fenced out
    assert await service.recorder.finish([Outcome(claims[0], output_text='{"late":true}')]) == [False]
    assert (await service.node(tenant, task["id"], "a"))["output"]["by"] == "a"


async def test_stop_is_graceful_running_steps_finish_and_are_recorded(make_service, database, tenant, pipeline_id,
                                                                       step_type):
    calls = []
    service = make_service(database, poll_interval=0.1)
    service.register_handler(step_type, recorder(calls, delay=0.4))
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type},
                                                {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await service.submit(tenant, pipeline_id, "o", "graceful", {})
    while not calls:
        await asyncio.sleep(0.01)
    await service.stop(timeout=5)  # a is running: it finishes and is recorded; b is not started
    service.autostart = False
    detail = await service.detail(tenant, task["id"])
    assert [s["status"] for s in detail["steps"]] == ["succeeded", "pending"]
    assert [c["step"] for c in calls] == ["a"] and "end" in calls[0]
    await service.start()  # a new executor takes over where it stopped
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"


async def test_a_slot_frees_when_the_handler_ends_and_unrecorded_outcomes_are_bounded(make_service, database, tenant,
                                                                                       pipeline_id, step_type):
    """With one slot: while the first outcome waits to be recorded, the next step runs;
    once as many outcomes wait as there are slots, nothing more is claimed."""
    calls, recording = [], asyncio.Event()
    service = make_service(database, poll_interval=0.1, concurrency=1)
    service.register_handler(step_type, recorder(calls))
    await service.storage.create_missing_tables(include_reference=True)
    finish = service.recorder.finish

    async def held_finish(outcomes):  # the database is slow to record (held until the test lets it go)
        await recording.wait()
        return await finish(outcomes)
    service.recorder.finish = held_finish
    polls = Polls(service)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    tasks = [await service.submit(tenant, pipeline_id, "o", f"t{i}", {}) for i in range(4)]
    await until(lambda: len(calls) == 2, what="a second run while the first outcome waits to be recorded")
    await polls.more(3, runnable=True)  # three chances to claim one more
    assert len(calls) == 2  # the bound held
    recording.set()
    for task in tasks:
        assert (await service.wait(tenant, task["id"], timeout=10))["status"] == "succeeded"
    assert len(calls) == 4


async def test_the_oldest_tasks_ready_steps_are_claimed_first(stepper, tenant, pipeline_id, step_type):
    """A successor takes its task's place in the queue: under a backlog, started tasks finish first."""
    service = stepper  # no executor loop: the test claims by hand
    service.register_handler(step_type, recorder([]))
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type},
                                                {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    older = await service.submit(tenant, pipeline_id, "o", "older", {})
    await asyncio.sleep(0.01)
    newer = await service.submit(tenant, pipeline_id, "o", "newer", {})
    claim = lambda: service.claimer.claim_ready("worker", 1, 30_000, [step_type], {}, None)  # noqa: E731
    [first] = await claim()
    assert (first.task_id, first.step_name) == (older["id"], "a")
    assert await service.recorder.finish([Outcome(first, output_text='{"x":1}')]) == [True]
    [second] = await claim()  # older's b became ready after newer's a, yet comes first
    assert (second.task_id, second.step_name) == (older["id"], "b")
    [third] = await claim()
    assert (third.task_id, third.step_name) == (newer["id"], "a")
    # handed back: a lease left to expire would be recovered by a later test's service
    assert await service.recorder.release([second, third]) == 2


@pytest.mark.parametrize("size", [5, 40])  # read whole and settled from its states / settled by counters
async def test_a_task_ends_the_same_whether_read_whole_or_by_the_steps_it_touches(stepper, tenant, pipeline_id,
                                                                                  step_type, size):
    from pipeline_service.engine.progress import WHOLE_TASK_STEPS
    assert (size <= WHOLE_TASK_STEPS) == (size == 5)

    async def handler(tenant_id, task_id, step_name, input_data, config):
        if input_data["params"].get("fail") == step_name:
            raise ValueError(f"{step_name} broke")
        return {"step": step_name}
    stepper.register_handler(step_type, handler)
    # a root, then a fan of size - 2 steps, then a join
    fan = [f"f{i:02d}" for i in range(size - 2)]
    await stepper.define_pipeline(pipeline_id, [{"step_name": "root", "step_type": step_type}]
                                  + [{"step_name": f, "step_type": step_type, "depends_on": ["root"]} for f in fan]
                                  + [{"step_name": "join", "step_type": step_type, "depends_on": fan}])
    good = await stepper.submit(tenant, pipeline_id, "o", "good", {})
    bad = await stepper.submit(tenant, pipeline_id, "o", "bad", {"fail": fan[1]})
    await step_until_idle(stepper)
    good, bad = await stepper.detail(tenant, good["id"]), await stepper.detail(tenant, bad["id"])
    assert good["status"] == "succeeded" and good["progress"]["succeeded"] == size
    assert bad["status"] == "failed" and bad["error"] == f"step {fan[1]!r} failed: ValueError: {fan[1]} broke"
    assert {s["step_name"]: s["status"] for s in bad["steps"]}["join"] == "skipped"
