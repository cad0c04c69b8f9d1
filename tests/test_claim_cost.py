"""What a claim costs with many tenants (MariaDB and SQLite): the tenants it asks for ready
steps are asked in one statement (UNION ALL), not one round trip each — with 2,000
tenants of one task each, a statement per tenant cost a round trip per claimed step."""
from collections import Counter

import pytest

from pipeline_service import PipelineService
from conftest import scratch_mysql_database, scratch_name
from pipeline_service.engine.claiming import TENANTS_PER_STATEMENT
from test_idle import RoundTrips


@pytest.fixture
def database(backend, tmp_path):
    """A database of this test's own: ready steps other tests left behind (of other step
    types) would join the claim's rounds and change the count of statements."""
    if backend == "mysql":
        return scratch_mysql_database(scratch_name("claims"))
    return f"sqlite:///{tmp_path / 'claims.db'}"


async def work(tenant_id, task_id, step_name, input_data, config):
    return {}


async def backlog(database, pipeline_id, step_type, tenants):
    """A service that has not started its executor, with one ready step for each of ``tenants``."""
    service = PipelineService(database, autostart=False)
    service.register_handler(step_type, work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    for tenant_id in tenants:
        await service.submit(tenant_id, pipeline_id, "o", "t")
    return service


async def claim(service, free, step_type, held):
    """Claim as a process would (a 30 s lease); the claims join ``held``, which the test hands back
    when it ends (a lease left to expire would be recovered by a later test's service)."""
    claims = await service.claimer.claim_ready("test-owner", free, 30_000, [step_type], {})
    held += claims
    return claims


def ready_step_reads(trips):
    return [s for _, s in trips.sent if any("FROM pipeline_task_steps" in x and "ORDER BY priority DESC, ready_at" in x for x in s)]


async def test_a_claim_asks_many_tenants_in_one_round_trip(database, tenant, pipeline_id, step_type, monkeypatch):
    service, held = await backlog(database, pipeline_id, step_type, [f"{tenant}-{i:03d}" for i in range(150)]), []
    try:
        trips = RoundTrips(monkeypatch)
        claims = await claim(service, TENANTS_PER_STATEMENT, step_type, held)
        assert sorted(Counter(c.tenant_id for c in claims).values()) == [1] * TENANTS_PER_STATEMENT  # one each
        assert len(ready_step_reads(trips)) == 1
        # more free slots than one statement asks tenants for: a round trip per TENANTS_PER_STATEMENT tenants
        trips.sent.clear()
        claims = await claim(service, TENANTS_PER_STATEMENT + 16, step_type, held)
        assert len({c.tenant_id for c in claims}) == TENANTS_PER_STATEMENT + 16
        assert len(ready_step_reads(trips)) == 2
    finally:
        await service.recorder.release(held)
        await service.stop()


async def test_slots_a_tenant_cannot_use_go_to_the_others_in_the_same_claim(database, tenant, pipeline_id,
                                                                             step_type):
    """Tenants believed ready but with nothing to run here (a paused task) get a share of the
    slots like any other; what they cannot use goes to the tenant with a backlog."""
    idle = [f"{tenant}-idle{i}" for i in range(3)]
    service, held = await backlog(database, pipeline_id, step_type, idle + [f"{tenant}-busy"] * 10), []
    try:
        for tenant_id in idle:
            task = (await service.list(tenant_id))["rows"][0]
            await service.pause(tenant_id, task["id"])
        claims = await claim(service, 8, step_type, held)
        assert [c.tenant_id for c in claims] == [f"{tenant}-busy"] * 8
    finally:
        await service.recorder.release(held)
        await service.stop()


async def test_the_inputs_a_claim_round_finds_uncached_are_read_in_one_go(stepper, tenant, pipeline_id, step_type,
                                                                         monkeypatch):
    # a wide task makes more steps ready at once than the caches keep: their inputs (and the
    # outputs these name) are read for the whole claim round in a statement each, not per step
    seen = {}

    async def handler(tenant_id, task_id, step_name, input_data, config):
        seen[step_name] = input_data
        return {"from": step_name}
    stepper.register_handler(step_type, handler)
    middles = [f"m{i:02d}" for i in range(40)]
    await stepper.define_pipeline(pipeline_id, [{"step_name": "root", "step_type": step_type}] + [
        {"step_name": m, "step_type": step_type, "depends_on": ["root"]} for m in middles])
    task = await stepper.submit(tenant, pipeline_id, "o", "wide", {"p": 1})
    await stepper.executor.run_once()  # root: its output made the 40 steps ready
    stepper.caches.inputs.clear()  # as if evicted by other tasks' steps
    stepper.caches.outputs.clear()
    trips = RoundTrips(monkeypatch)
    done = await stepper.executor.run_once()
    assert sorted(c.step_name for c in done.claims) == middles
    assert all(seen[m] == {"params": {"p": 1}, "upstream": {"root": {"from": "root"}}} for m in middles)
    artifact_reads = [s for _, sent in trips.sent for s in sent
                      if "FROM pipeline_artifacts" in s and s.lstrip().upper().startswith(("SELECT", "(SELECT"))]
    assert len(artifact_reads) == 2, artifact_reads  # the 40 inputs, then the one output they name
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
