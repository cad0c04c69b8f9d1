"""Fair dispatch across tenants and the per-tenant concurrency limit (MariaDB and SQLite)."""
import asyncio
import time

from pipeline_service import PipelineService, register_handler


async def test_a_backlog_of_one_tenant_does_not_starve_another(database, tenant, pipeline_id, step_type):
    finished = {}

    async def work(tenant_id, task_id, step_name, input_data, config):
        await asyncio.sleep(0.1)
        finished.setdefault(tenant_id, 0)
        finished[tenant_id] += 1
        return {}
    register_handler(step_type, work)
    service = PipelineService(database, concurrency=8, poll_interval=0.2)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    heavy, light = tenant + "-A", tenant + "-B"
    for i in range(2000):  # tenant A queues 2,000 tasks (they start running meanwhile)
        await service.submit(heavy, pipeline_id, "o", f"a{i}", {})
    submitted = time.monotonic()
    task = await service.submit(light, pipeline_id, "o", "b", {})
    detail = await service.wait(light, task["id"], interval=0.01)
    took = time.monotonic() - submitted
    heavy_done = finished.get(heavy, 0)
    await service.stop(timeout=5)
    assert detail["status"] == "succeeded"
    assert took < 2.0, f"tenant B waited {took:.2f}s behind tenant A's backlog"
    assert heavy_done < 1500, "tenant A's backlog was nearly drained first: the test proves nothing"


async def test_per_tenant_limit_caps_one_tenant_not_the_others(database, tenant, pipeline_id, step_type):
    in_flight, peak = {}, {}

    async def work(tenant_id, task_id, step_name, input_data, config):
        in_flight[tenant_id] = in_flight.get(tenant_id, 0) + 1
        peak[tenant_id] = max(peak.get(tenant_id, 0), in_flight[tenant_id])
        await asyncio.sleep(0.1)
        in_flight[tenant_id] -= 1
        return {}
    register_handler(step_type, work)
    service = PipelineService(database, concurrency=16, tenant_concurrency=2, poll_interval=0.2)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [
        {"step_name": f"s{i}", "step_type": step_type} for i in range(10)])
    a = await service.submit(tenant + "-A", pipeline_id, "o", "a", {})
    b = await service.submit(tenant + "-B", pipeline_id, "o", "b", {})
    assert (await service.wait(tenant + "-A", a["id"]))["status"] == "succeeded"
    assert (await service.wait(tenant + "-B", b["id"]))["status"] == "succeeded"
    await service.stop()
    assert peak[tenant + "-A"] == 2 and peak[tenant + "-B"] == 2
