"""Schedules fired by several real processes on one real MariaDB: every tick makes exactly one
task however many processes race for it, and a process killed (kill -9) in the middle of a
tick leaves no task and the tick due, for another process to fire."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline_service.ids import new_id, now_ms
from conftest import mysql_admin, scratch_mysql_database, scratch_name
from engine_hosts import ROOT, Hosts, front_service

DB = scratch_name("mpsched")
CRASH = ROOT / "tests" / "tick_crash_process.py"
pytestmark = pytest.mark.slow


@pytest.fixture
def db():
    return scratch_mysql_database(DB)


@pytest.fixture
async def hosts(db, tmp_path):
    with Hosts(db, tmp_path) as h:
        yield h


@pytest.fixture
async def front(db):
    """The test's own service: it creates schedules and reads; it fires no tick (no executor)."""
    async with front_service(db, {"mps-one": [{"step_name": "a", "step_type": "mp-noop"}]}) as svc:
        yield svc


def tasks_per_tick(tenant):
    """{(schedule id, tick): tasks} of the tenant, read straight from the table."""
    conn = mysql_admin(database=DB)
    with conn.cursor() as cur:
        cur.execute("SELECT schedule_id, scheduled_for, count(*) FROM pipeline_tasks WHERE tenant_id = %s "
                    "GROUP BY schedule_id, scheduled_for", (tenant,))
        found = {(s, t): n for s, t, n in cur.fetchall()}
    conn.close()
    return found


async def make_due(front, tenant, ids, first):
    """All the schedules due at once, from ``first`` (one transaction: the processes race for them)."""
    async with front.storage.transaction() as tx:
        for schedule_id in ids:
            await tx.execute("set_schedule_status", tenant_id=tenant, schedule_id=schedule_id, status="active",
                             next_fire_at=first, now=now_ms())


async def wait_until(condition, timeout, message):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.1)


async def test_three_processes_racing_for_the_same_ticks_make_one_task_each(hosts, front):
    """20 schedules, each with 10 ticks due at once (catch_up all), three processes polling
    every 0.1 s: 200 tasks, one per (schedule, tick)."""
    tenant = "mps-" + new_id()[:8]
    ids = [(await front.schedule_create(tenant, "mps-one", "o", every=10, catch_up="all"))["id"]
           for _ in range(20)]
    hosts.start(3, poll=0.1)
    first = now_ms() - 95_000
    await make_due(front, tenant, ids, first)
    expected = {(s, first + i * 10_000) for s in ids for i in range(10)}
    await wait_until(lambda: expected <= set(tasks_per_tick(tenant)), 60, "not every due tick made its task")
    counts = tasks_per_tick(tenant)
    assert set(counts.values()) == {1}, {k: n for k, n in counts.items() if n != 1}
    for schedule in (await front.schedule_list(tenant, rows=20))["rows"]:
        assert schedule["next_fire_at"] > schedule["last_fired_at"]


async def test_a_process_killed_mid_tick_leaves_the_tick_to_another(hosts, front, db):
    tenant = "mps-" + new_id()[:8]
    schedule = await front.schedule_create(tenant, "mps-one", "o", every=3600)
    tick = now_ms() - 1000
    await make_due(front, tenant, [schedule["id"]], tick)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    victim = subprocess.Popen([sys.executable, str(CRASH), "--db", db], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.to_thread(victim.stdout.readline)
        assert line.startswith("ticked "), "the victim never reached its tick"
        lost = line.split()[1]
        hosts.start(1, poll=0.1)  # it polls while the victim holds the tick: SKIP LOCKED, nothing made
        assert tasks_per_tick(tenant) == {}
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    await wait_until(lambda: tasks_per_tick(tenant), 30, "no process fired the tick after the kill")
    assert tasks_per_tick(tenant) == {(schedule["id"], tick): 1}
    [task] = (await front.list(tenant))["rows"]
    assert task["id"] != lost  # the victim's task was never committed
    listed = (await front.schedule_list(tenant))["rows"][0]
    assert listed["last_task_id"] == task["id"]
