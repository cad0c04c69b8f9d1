"""Stepping the engine by hand (Executor.run_once) on MariaDB and SQLite: one claim round,
every claimed handler run to its end, the outcomes recorded; no loop, no timing."""
import pytest

from pipeline_service import InvalidStateError

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
