"""Fair dispatch across tenants and the per-tenant concurrency limit (MariaDB and SQLite)."""
import asyncio
import time

from pipeline_service.engine.claiming import TENANTS_PER_CLAIM


async def backlog_service(make_service, database, pipeline_id, step_type, work):
    """A service of 8 slots running ``work`` for a one-step pipeline, not started: a test queues
    its backlogs first, so that they are whole however slowly a loaded machine submits them."""
    service = make_service(database, concurrency=8, poll_interval=0.2, autostart=False)
    service.register_handler(step_type, work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    return service


async def test_a_backlog_of_one_tenant_does_not_starve_another(make_service, database, tenant, pipeline_id,
                                                               step_type):
    finished = {}

    async def work(tenant_id, task_id, step_name, input_data, config):
        await asyncio.sleep(0.1)
        finished.setdefault(tenant_id, 0)
        finished[tenant_id] += 1
        return {}
    service = await backlog_service(make_service, database, pipeline_id, step_type, work)
    heavy, light = tenant + "-A", tenant + "-B"
    for i in range(2000):  # tenant A queues 2,000 tasks
        await service.submit(heavy, pipeline_id, "o", f"a{i}", {})
    await service.start()
    await until(lambda: finished.get(heavy, 0) >= 8, timeout=10)  # tenant A's backlog runs
    submitted = time.monotonic()
    task = await service.submit(light, pipeline_id, "o", "b", {})
    detail = await service.wait(light, task["id"], interval=0.01)
    took = time.monotonic() - submitted
    heavy_done = finished.get(heavy, 0)
    await service.stop(timeout=5)
    assert detail["status"] == "succeeded"
    assert took < 2.0, f"tenant B waited {took:.2f}s behind tenant A's backlog"
    assert heavy_done < 1500, "tenant A's backlog was nearly drained first: the test proves nothing"


async def test_per_tenant_limit_caps_one_tenant_not_the_others(make_service, database, tenant, pipeline_id,
                                                               step_type):
    in_flight, peak = {}, {}

    async def work(tenant_id, task_id, step_name, input_data, config):
        in_flight[tenant_id] = in_flight.get(tenant_id, 0) + 1
        peak[tenant_id] = max(peak.get(tenant_id, 0), in_flight[tenant_id])
        await asyncio.sleep(0.1)
        in_flight[tenant_id] -= 1
        return {}
    service = make_service(database, concurrency=16, tenant_concurrency=2, poll_interval=0.2)
    service.register_handler(step_type, work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [
        {"step_name": f"s{i}", "step_type": step_type} for i in range(10)])
    a = await service.submit(tenant + "-A", pipeline_id, "o", "a", {})
    b = await service.submit(tenant + "-B", pipeline_id, "o", "b", {})
    assert (await service.wait(tenant + "-A", a["id"]))["status"] == "succeeded"
    assert (await service.wait(tenant + "-B", b["id"]))["status"] == "succeeded"
    assert peak[tenant + "-A"] == 2 and peak[tenant + "-B"] == 2


async def test_a_new_tenant_is_served_behind_many_busy_tenants(make_service, database, tenant, pipeline_id,
                                                               step_type):
    """More tenants with backlogs than a claim round reads at once (claiming.TENANTS_PER_CLAIM):
    a tenant that arrives last is still served within a bound, long before the backlogs drain."""
    started = {}  # tenant: how many steps had started before its first
    starts = 0

    async def work(tenant_id, task_id, step_name, input_data, config):
        nonlocal starts
        started.setdefault(tenant_id, starts)
        starts += 1
        await asyncio.sleep(0.05)
        return {}
    service = await backlog_service(make_service, database, pipeline_id, step_type, work)
    busy = [f"{tenant}-{i:02d}" for i in range(TENANTS_PER_CLAIM + 8)]
    for round_ in range(30):  # 40 tenants, 30 tasks each: 1,200 steps, ~7.5 s of work on 8 slots
        for name in busy:
            await service.submit(name, pipeline_id, "o", f"{name}/{round_}", {})
    await service.start()  # the backlogs are whole however slowly a loaded machine submitted them
    await until(lambda: len(started) >= 8, timeout=10)  # all slots busy
    newcomer = tenant + "-new"
    submitted = starts
    await service.submit(newcomer, pipeline_id, "o", "first", {})
    await until(lambda: newcomer in started, timeout=10)
    # counted in steps, not seconds (a loaded machine stretches seconds): no more steps of the
    # others start before the newcomer's first than there are busy tenants, i.e. it waits for
    # one step of each of them at most, not for their backlogs
    ahead = started[newcomer] - submitted
    left = (await service.list(busy[0], status="pending", rows=1))["total"]
    assert ahead <= len(busy), f"{ahead} steps of {len(busy)} busy tenants started before the new tenant's first"
    assert left > 0, "the backlogs were drained first: the test proves nothing"


async def until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_backlog_at_the_highest_priority_does_not_starve_another_tenants_lowest(
        make_service, database, tenant, pipeline_id, step_type):
    """Priorities order a tenant's own queue only: tenant A's 1,000 tasks at priority 9 do not
    delay tenant B's one task at priority 0; A's priority 9 tasks go before its priority 1 ones."""
    order = []

    async def work(tenant_id, task_id, step_name, input_data, config):
        await asyncio.sleep(0.05)
        order.append((tenant_id, input_data["params"]["p"]))
        return {}
    service = await backlog_service(make_service, database, pipeline_id, step_type, work)
    heavy, light = tenant + "-A", tenant + "-B"
    for i in range(1000):  # submitted before the executor starts: the whole backlog is queued
        priority = 1 if i < 500 else 9
        await service.submit(heavy, pipeline_id, "o", f"a{i}", {"p": priority}, priority=priority)
    await service.start()
    submitted = time.monotonic()
    task = await service.submit(light, pipeline_id, "o", "b", {"p": 0}, priority=0)
    detail = await service.wait(light, task["id"], interval=0.01)
    took = time.monotonic() - submitted
    heavy_done = [p for t, p in order if t == heavy]
    await service.stop(timeout=5)
    assert detail["status"] == "succeeded"
    assert took < 2.0, f"tenant B's priority 0 task waited {took:.2f}s behind tenant A's priority 9 backlog"
    assert len(heavy_done) < 500, "tenant A's priority 9 work was drained first: the test proves nothing"
    assert set(heavy_done) == {9}, "tenant A ran a priority 1 task before its priority 9 ones"
