"""Human control racing itself and the executor on MariaDB: the task row is locked first (in id
order), so concurrent pause/resume/modify/cancel never deadlock and no driver error escapes."""
import asyncio
import logging
import random

import pytest

from pipeline_service import InvalidStateError, PipelineService

STEPS = [{"step_name": "a"}, {"step_name": "b", "depends_on": ["a"]}, {"step_name": "c", "depends_on": ["a"]},
         {"step_name": "d", "depends_on": ["b", "c"]}, {"step_name": "e", "depends_on": ["d"]}]


@pytest.fixture
def caplog_storage(caplog):
    caplog.set_level(logging.INFO, logger="pipeline_service.store.storage")
    return caplog


async def test_concurrent_control_never_deadlocks(mysql_schema, tenant, pipeline_id, step_type, caplog_storage):
    async def work(tenant_id, task_id, step_name, input_data, config):
        await asyncio.sleep(random.random() * 0.005)
        return {"step": step_name}
    # the heartbeat (every lease/3) stays out of the way: the test is about control and finish
    service = PipelineService(mysql_schema, concurrency=32, poll_interval=0.05, lease_seconds=120)
    service.register_handler(step_type, work)
    await service.define_pipeline(pipeline_id, [dict(s, step_type=step_type) for s in STEPS])
    tasks = [(await service.submit(tenant, pipeline_id, "o", f"t{i}", {}))["id"] for i in range(6)]
    rng = random.Random(7)

    async def operate(worker):
        errors = []
        for _ in range(100):
            task_id = tasks[rng.randrange(len(tasks))]  # the same and overlapping tasks, at once
            op = rng.choice(["pause", "resume", "modify", "modify", "cancel"] if worker == 0 else
                            ["pause", "resume", "modify", "modify"])
            try:
                if op == "modify":
                    await service.modify(tenant, task_id, {rng.choice("abcd"): {"output": {"by": worker}}},
                                         rerun_from=rng.choice([None, "a", "b"]))
                else:
                    await getattr(service, op)(tenant, task_id)
            except InvalidStateError:
                pass  # e.g. a pause of a finished task: refused, as documented
            except Exception as exc:  # anything else is a failure of the test
                errors.append(exc)
        return errors
    try:
        errors = [e for found in await asyncio.gather(*(operate(w) for w in range(10))) for e in found]
        assert errors == [], [repr(e) for e in errors[:5]]
        for task_id in tasks:  # let everything end
            if (await service.detail(tenant, task_id))["status"] == "paused":
                await service.resume(tenant, task_id)
        details = [await service.wait(tenant, task_id, timeout=30) for task_id in tasks]
        await check_ended(service, tenant, details)  # before the storage closes: it reads nodes
    finally:
        await service.stop(timeout=5)
        await service.storage.close()
    conflicts = [r.getMessage() for r in caplog_storage.records if "transaction conflict" in r.getMessage()]
    assert conflicts == [], conflicts[:3]


async def check_ended(service, tenant, details):
    """Every task ended as one of its controls left it, and every output version is stored once."""
    for detail in details:
        statuses = {s["step_name"]: s["status"] for s in detail["steps"]}
        if detail["status"] == "succeeded":
            assert set(statuses.values()) == {"succeeded"}, detail
        else:
            assert detail["status"] == "cancelled", detail
            assert not {"running", "pending"} & set(statuses.values()), detail
        for step in detail["steps"]:  # every output version stored once, the newest in force
            node = await service.node(tenant, detail["id"], step["step_name"]) if step["output_version"] else None
            if node:
                versions = [v["version"] for v in node["versions"] if v["kind"] == "output"]
                assert versions == list(range(1, len(versions) + 1)) and node["version"] == versions[-1]
