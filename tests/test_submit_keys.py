"""Idempotent submits and priorities (MariaDB and SQLite).

A key: the same tenant and key give one task however many submits race for it (the unique
key decides, not a read before the write); another tenant's key is another key.  Priorities
order a tenant's own queue; the claim's fairness between tenants stays as it was."""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_service import InvalidInputError, InvalidStateError, PipelineService
from pipeline_service.exceptions import DuplicateKeyError
from conftest import scratch_mysql_database, scratch_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def front(stepper, pipeline_id, step_type):
    async def work(tenant_id, task_id, step_name, input_data, config):
        return {}
    stepper.register_handler(step_type, work)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    return stepper


async def test_twenty_coroutines_with_one_key_make_one_task(front, tenant, pipeline_id):
    tasks = await asyncio.gather(*(front.submit(tenant, pipeline_id, "o", f"try {i}", {"i": i},
                                                idempotency_key="order-42") for i in range(20)))
    assert len({t["id"] for t in tasks}) == 1
    listed = await front.list(tenant)
    assert listed["total"] == 1 and listed["rows"][0]["id"] == tasks[0]["id"]
    # the first submit's arguments are the task's: a retry changes nothing
    assert (await front.detail(tenant, tasks[0]["id"]))["params"] == {"i": int(listed["rows"][0]["title"][4:])}
    other = await front.submit(tenant + "-b", pipeline_id, "o", idempotency_key="order-42")
    assert other["id"] != tasks[0]["id"]  # another tenant's key is another key
    plain = [await front.submit(tenant, pipeline_id, "o") for _ in range(2)]
    assert len({t["id"] for t in plain}) == 2 and (await front.list(tenant))["total"] == 3


async def test_the_unique_key_decides_not_the_read_before_the_write(front, tenant, pipeline_id, monkeypatch):
    """Both submits read "no task with this key" before either writes (the read is made to miss):
    the database's unique key refuses the second, which then returns the first one's task."""
    first = await front.submit(tenant, pipeline_id, "o", idempotency_key="k-1")
    misses = []
    real = front.tasks._submit_once

    async def blind_once(tx, new, require_handlers):
        if not misses:
            misses.append(new)
            return await front.tasks.write_task(tx, new, require_handlers)  # as if the read had found nothing
        return await real(tx, new, require_handlers)
    monkeypatch.setattr(front.tasks, "_submit_once", blind_once)
    again = await front.submit(tenant, pipeline_id, "o", idempotency_key="k-1")
    assert misses and again["id"] == first["id"] and (await front.list(tenant))["total"] == 1


async def test_a_key_names_one_pipeline_and_bad_keys_are_refused(front, tenant, pipeline_id, step_type):
    await front.submit(tenant, pipeline_id, "o", idempotency_key="k")
    await front.define_pipeline(pipeline_id + "-2", [{"step_name": "only", "step_type": step_type}])
    with pytest.raises(InvalidStateError, match="already names task"):
        await front.submit(tenant, pipeline_id + "-2", "o", idempotency_key="k")
    for key in ("", " k", "x" * 65, 7):
        with pytest.raises(InvalidInputError, match="idempotency_key"):
            await front.submit(tenant, pipeline_id, "o", idempotency_key=key)
    assert (await front.list(tenant))["total"] == 1


async def test_two_processes_race_with_one_key_on_mariadb(tmp_path, tenant, pipeline_id, step_type):
    """Two processes (each with 10 coroutines) submit with the same key at once: one task.
    (MariaDB: several processes share a database there; an SQLite file is one process's.)"""
    database = scratch_mysql_database(scratch_name("keys"))
    setup = PipelineService(database, autostart=False, require_handlers=False)
    await setup.storage.create_missing_tables(include_reference=True)
    await setup.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    await setup.stop()
    go = tmp_path / "go"
    script = (
        "import asyncio, json, os, sys, time\n"
        "from pipeline_service import PipelineService\n"
        "async def main():\n"
        "    svc = PipelineService(sys.argv[1], autostart=False, require_handlers=False)\n"
        "    await svc.submit(sys.argv[2] + '-warm', sys.argv[3], 'o')  # connect before the race\n"
        "    print('ready', flush=True)\n"
        "    while not os.path.exists(sys.argv[4]):\n"
        "        time.sleep(0.001)\n"
        "    tasks = await asyncio.gather(*(svc.submit(sys.argv[2], sys.argv[3], 'o', str(i),\n"
        "                                              idempotency_key='pay-7') for i in range(10)))\n"
        "    print(json.dumps(sorted({t['id'] for t in tasks})), flush=True)\n"
        "    await svc.stop()\n"
        "asyncio.run(main())\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, database, tenant, pipeline_id, str(go)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        ids = [json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill() if proc.poll() is None else None
    assert all(proc.returncode == 0 for proc in procs)
    assert ids[0] == ids[1] and len(ids[0]) == 1
    check = PipelineService(database, autostart=False, require_handlers=False)
    assert (await check.list(tenant))["total"] == 1
    await check.stop()


async def test_a_second_row_for_a_key_is_refused_by_the_database(front, tenant, pipeline_id):
    first = await front.submit(tenant, pipeline_id, "o", idempotency_key="raw")
    row = dict(id="second", tenant_id=tenant, pipeline_id=pipeline_id, owner_id="o", title="", params="{}",
               status="pending", now=1, priority=5, idempotency_key="raw", schedule_id=None, scheduled_for=None)
    with pytest.raises(DuplicateKeyError):
        async with front.storage.transaction() as tx:
            await tx.execute("insert_task", **row)
    assert [r["id"] for r in (await front.list(tenant))["rows"]] == [first["id"]]


# ---- priorities ----------------------------------------------------------------------

async def claimed_titles(service, step_type, free, held):
    claims = await service.claimer.claim_ready("test-owner", free, 30_000, [step_type], {})
    held += claims
    return [(c.tenant_id, (await service.detail(c.tenant_id, c.task_id))["title"]) for c in claims]


async def test_priorities_order_a_tenants_queue(front, tenant, pipeline_id, step_type):
    held = []
    try:
        for title, priority in (("old-5", None), ("low-0", 0), ("high-9", 9), ("mid-7", 7), ("new-5", 5),
                                ("high-9b", 9)):
            await front.submit(tenant, pipeline_id, "o", title, priority=priority)
        order = [title for _, title in await claimed_titles(front, step_type, 6, held)]
        assert order == ["high-9", "high-9b", "mid-7", "old-5", "new-5", "low-0"]  # oldest first within one
    finally:
        await front.recorder.release(held)
    with pytest.raises(InvalidInputError, match="priority must be a whole number from 0 to 9"):
        await front.submit(tenant, pipeline_id, "o", priority=-1)
    with pytest.raises(InvalidInputError, match="priority"):
        await front.submit(tenant, pipeline_id, "o", priority=True)


async def test_a_tenants_high_priority_does_not_take_another_tenants_share(front, tenant, pipeline_id, step_type):
    """Tenant A queues 20 tasks at priority 9, tenant B one at priority 0: a claim of 4 slots
    still gives B its step; A's first claims are its priority 9 steps."""
    busy, quiet, held = tenant + "-A", tenant + "-B", []
    try:
        for i in range(20):
            await front.submit(busy, pipeline_id, "o", f"a{i}", priority=9 if i >= 10 else 1)
        await front.submit(quiet, pipeline_id, "o", "b", priority=0)
        claimed = await claimed_titles(front, step_type, 4, held)
        assert (quiet, "b") in claimed
        assert {title for t, title in claimed if t == busy} <= {f"a{i}" for i in range(10, 20)}
    finally:
        await front.recorder.release(held)
