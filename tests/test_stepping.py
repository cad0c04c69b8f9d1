"""Stepping the engine by hand (Executor.run_once) on MariaDB and SQLite: one claim round,
every claimed handler run to its end, the outcomes recorded; no loop, no timing."""
import pytest

from pipeline_service import InvalidStateError
from pipeline_service.ids import now_ms
from pipeline_service.store import sqlor_adapter

DIAMOND = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]


def diamond(step_type):
    return [{"step_name": name, "step_type": step_type, **({"depends_on": deps} if deps else {})}
            for name, deps in DIAMOND]


async def test_a_diamond_takes_three_rounds_and_a_fourth_finds_nothing(stepper, tenant, pipeline_id, step_type):
    calls = []

    async def handler(tenant_id, task_id, step_name, input_data, config):
        calls.append(step_name)
        return {"step": step_name, "after": sorted(input_data["upstream"])}

    stepper.register_handler(step_type, handler)
    await stepper.define_pipeline(pipeline_id, diamond(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "diamond", {})
    rounds = [await stepper.executor.run_once() for _ in range(4)]
    assert [sorted(c.step_name for c in r.claims) for r in rounds] == [["a"], ["b", "c"], ["d"], []]
    assert [[o.claim for o in r.outcomes] for r in rounds] == [list(r.claims) for r in rounds]
    assert all(o.error is None for r in rounds for o in r.outcomes)
    assert sorted(calls) == ["a", "b", "c", "d"] and calls[0] == "a" and calls[-1] == "d"
    assert rounds[2].outcomes[0].output == {"step": "d", "after": ["b", "c"]}
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert [s["status"] for s in detail["steps"]] == ["succeeded"] * 4


async def test_a_failing_step_uses_one_round_per_attempt_then_fails(stepper, tenant, pipeline_id, step_type):
    attempts = []

    async def broken(tenant_id, task_id, step_name, input_data, config):
        attempts.append(step_name)
        raise RuntimeError(f"attempt {len(attempts)} broke")

    stepper.register_handler(step_type, broken)
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 2, "retry_delay": 0}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await stepper.submit(tenant, pipeline_id, "o", "retries", {})
    outcomes = []
    for _ in range(3):
        (outcome,) = (await stepper.executor.run_once()).outcomes
        outcomes.append(outcome)
    assert [o.claim.run_attempt for o in outcomes] == [1, 2, 3]
    assert [o.retry_delay for o in outcomes] == [0, 0, None]  # a retry follows the first two only
    assert [o.error for o in outcomes] == [f"RuntimeError: attempt {i} broke" for i in (1, 2, 3)]
    assert (await stepper.executor.run_once()).claims == ()  # b never becomes ready
    assert attempts == ["a"] * 3
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "failed"
    assert [(s["status"], s["attempt"]) for s in detail["steps"]][0] == ("failed", 3)
    assert detail["steps"][1]["attempt"] == 0
    assert "attempt 3 broke" in detail["steps"][0]["error"]


async def test_a_retry_that_succeeds_feeds_the_next_step(stepper, tenant, pipeline_id, step_type):
    async def flaky(tenant_id, task_id, step_name, input_data, config):
        if step_name == "a" and not flaky.failed:
            flaky.failed = True
            raise RuntimeError("first attempt broke")
        return {"step": step_name, "upstream": input_data["upstream"]}
    flaky.failed = False

    stepper.register_handler(step_type, flaky)
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 1, "retry_delay": 0}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    task = await stepper.submit(tenant, pipeline_id, "o", "flaky", {})
    rounds = [await stepper.executor.run_once() for _ in range(3)]
    assert [[(o.claim.step_name, o.claim.run_attempt, o.error is None) for o in r.outcomes] for r in rounds] == [
        [("a", 1, False)], [("a", 2, True)], [("b", 1, True)]]
    assert rounds[2].outcomes[0].output["upstream"] == {"a": {"step": "a", "upstream": {}}}
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"


async def test_an_attempt_failing_while_its_task_is_paused_is_retried_only_after_resume(
        stepper, tenant, pipeline_id, step_type):
    """A paused task holds its steps: the retry of an attempt that failed while a person paused the
    task is not due (no ready time) until the task is resumed, however short its delay."""
    calls = []

    async def paused_then_broken(tenant_id, task_id, step_name, input_data, config):
        calls.append(step_name)
        if len(calls) == 1:
            await stepper.pause(tenant_id, task_id)  # a person pauses the task while its step runs
            raise RuntimeError("broke while paused")
        return {"attempt": len(calls)}

    stepper.register_handler(step_type, paused_then_broken)
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 1, "retry_delay": 0}}])
    task = await stepper.submit(tenant, pipeline_id, "o", "paused retry", {})
    (failed,) = (await stepper.executor.run_once()).outcomes
    assert failed.retry_delay == 0 and failed.error == "RuntimeError: broke while paused"
    assert (await stepper.executor.run_once()).claims == ()  # held by the pause
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "paused" and detail["steps"][0]["status"] == "pending"
    await stepper.resume(tenant, task["id"])
    (retried,) = (await stepper.executor.run_once()).outcomes
    assert retried.claim.run_attempt == 2 and retried.output == {"attempt": 2}
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"


async def test_an_outcome_whose_claim_token_is_no_longer_the_steps_is_discarded(stepper, tenant, pipeline_id,
                                                                                step_type):
    """The claim token is (owner, attempt): a finish is recorded only if the step row still holds
    both.  Here the row comes to name another owner with the same attempt while the handler runs
    (as another process's claim would): the outcome is discarded, nothing of it is stored."""
    async def overtaken(tenant_id, task_id, step_name, input_data, config):
        async with stepper.storage.connector.session() as sor:
            await sqlor_adapter.run(sor, "UPDATE pipeline_task_steps SET owner = ${owner}$ "
                                         "WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$",
                                    {"owner": "another-process", "tenant_id": tenant_id, "task_id": task_id})
            await sqlor_adapter.commit(sor)
        return {"late": True}

    stepper.register_handler(step_type, overtaken)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await stepper.submit(tenant, pipeline_id, "o", "fenced", {})
    done = await stepper.executor.run_once()
    assert [c.step_name for c in done.claims] == ["a"] and done.outcomes == ()  # ran, not recorded
    detail = await stepper.detail(tenant, task["id"])
    assert detail["steps"][0]["status"] == "running" and detail["steps"][0]["output_version"] is None
    node = await stepper.node(tenant, task["id"], "a")
    assert [v["kind"] for v in node["versions"]] == ["input"]  # no output was stored


async def test_a_task_failing_in_several_steps_names_them_in_the_order_of_its_definition(
        stepper, tenant, pipeline_id, step_type):
    """Five steps fail in one round (their rows come back in the order of their random ids): the
    task's error names each, in the order of the pipeline's definition."""
    async def broken(tenant_id, task_id, step_name, input_data, config):
        raise ValueError(f"{step_name} broke")

    stepper.register_handler(step_type, broken)
    names = ["e", "d", "c", "b", "a"]  # not alphabetical: the definition's order is the one kept
    await stepper.define_pipeline(pipeline_id, [{"step_name": n, "step_type": step_type} for n in names])
    task = await stepper.submit(tenant, pipeline_id, "o", "five failures", {})
    assert len((await stepper.executor.run_once()).outcomes) == 5
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "failed"
    assert detail["error"] == "; ".join(f"step {n!r} failed: ValueError: {n} broke" for n in names)


async def test_a_step_whose_worker_died_while_its_task_was_paused_is_taken_back_held(
        stepper, tenant, pipeline_id, step_type):
    """A claim's lease runs out (its worker died) while a person has paused the task: recovery takes
    the step back, but held — no round runs it until the task is resumed."""
    calls = []

    async def work(tenant_id, task_id, step_name, input_data, config):
        calls.append(step_name)
        return {"ran": step_name}

    stepper.register_handler(step_type, work)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    task = await stepper.submit(tenant, pipeline_id, "o", "lost worker", {})
    [claim] = await stepper.claimer.claim_ready("dead-worker", 1, -1, [step_type], {}, None)  # expired at once
    await stepper.pause(tenant, task["id"])
    # recovery works across tenants (other tests' expired steps may be taken back too): this one's is
    assert await stepper.recorder.recover_expired(now_ms(), max_crashes=3) >= 1
    assert (await stepper.detail(tenant, task["id"]))["steps"][0]["status"] == "pending"
    assert (await stepper.executor.run_once()).claims == () and calls == []  # held by the pause
    await stepper.resume(tenant, task["id"])
    (ran,) = (await stepper.executor.run_once()).outcomes
    assert ran.output == {"ran": "a"} and calls == ["a"]
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"


async def test_a_round_claims_only_its_own_step_types(stepper, tenant, pipeline_id, step_type):
    stepper.register_handler(step_type + "-mine", lambda *args: {"ok": True})
    await stepper.define_pipeline(pipeline_id, [{"step_name": "x", "step_type": step_type + "-other"}])
    stepper.require_handlers = False
    task = await stepper.submit(tenant, pipeline_id, "o", "other", {})
    assert (await stepper.executor.run_once()).claims == ()
    assert (await stepper.detail(tenant, task["id"]))["steps"][0]["status"] == "pending"


async def test_run_once_refuses_while_the_loop_runs(service, tenant, pipeline_id, step_type):
    with pytest.raises(InvalidStateError, match="autostart=False"):
        await service.executor.run_once()
