"""Several real host processes (subprocesses) on one real MariaDB: scale-out and crashes."""
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline_service import PipelineService
from pipeline_service.ids import new_id
from conftest import IN_CI, mysql_admin, scratch_mysql_database, scratch_name, until
from engine_hosts import DIAMOND, ROOT, Hosts, front_service, wait_succeeded
from private_mariadb import INSTALL_DB, MARIADBD, PrivateMariaDB

MP_DB = scratch_name("mp")
pytestmark = pytest.mark.slow


@pytest.fixture
def mp_db():
    return scratch_mysql_database(MP_DB)


@pytest.fixture
async def hosts(mp_db, tmp_path):
    with Hosts(mp_db, tmp_path) as h:
        yield h


@pytest.fixture
async def submitter(mp_db):
    async with front_service(mp_db) as svc:
        yield svc


@pytest.fixture
def private_server():
    """A MariaDB server of this test's own (see private_mariadb.py), always removed after it."""
    if not (MARIADBD and INSTALL_DB):
        message = "mariadbd and mariadb-install-db are needed to start a private MariaDB server"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = PrivateMariaDB()
    try:
        server.install().start()
        yield server
    finally:
        server.remove()


@pytest.fixture
async def private_hosts(private_server, tmp_path):
    with Hosts(private_server.database("pipeline"), tmp_path) as h:
        yield h  # stopped before the server goes (this fixture is torn down first)


@pytest.fixture
async def private_submitter(private_hosts):
    async with front_service(private_hosts.db) as svc:
        yield svc


def artifact_counts(conn, tenant):
    """Output artifacts per step, running steps and crash counts of ``tenant``'s tasks (closes ``conn``)."""
    with conn.cursor() as cur:
        cur.execute("SELECT task_id, step_name, count(*), max(version) FROM pipeline_artifacts "
                    "WHERE tenant_id = %s AND kind = 'output' GROUP BY task_id, step_name", (tenant,))
        rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM pipeline_task_steps WHERE tenant_id = %s AND status = 'running'", (tenant,))
        running = cur.fetchone()[0]
        cur.execute("SELECT task_id, step_name, crash_count FROM pipeline_task_steps WHERE tenant_id = %s",
                    (tenant,))
        crashes = {(t, s): c for t, s, c in cur.fetchall()}
    conn.close()
    return rows, running, crashes


async def test_three_processes_run_200_tasks_each_step_once(hosts, submitter):
    await submitter.define_pipeline("mp-diamond", DIAMOND)
    hosts.start(3)
    tenant = "mp-" + new_id()[:8]
    ids = [(await submitter.submit(tenant, "mp-diamond", "o", f"t{i}", {"i": i}))["id"] for i in range(200)]
    await wait_succeeded(submitter, tenant, 200, timeout=180)
    ends = Counter((e[2], e[3]) for e in hosts.events() if e[0] == "end")
    assert len(ends) == 1000 and set(ends.values()) == {1}, "a step ran more or less than once"
    assert {t for t, _ in ends} == set(ids)
    pids = {e[1] for e in hosts.events() if e[0] == "end"}
    assert len(pids) >= 2, "the work was not shared between processes"
    rows, running, _ = artifact_counts(mysql_admin(database=MP_DB), tenant)
    assert len(rows) == 1000 and all(count == 1 and version == 1 for _, _, count, version in rows)
    assert running == 0


async def test_kill_9_mid_step_another_process_finishes(hosts, submitter):
    lease, poll = 2.0, 0.2
    await submitter.define_pipeline("mp-slow", [
        {"step_name": "a", "step_type": "mp-slow", "config": {"sleep": 1.5}},
        {"step_name": "b", "step_type": "mp-noop", "depends_on": ["a"]}])
    victim, survivor = hosts.start(2, lease=lease, poll=poll)
    tenant = "mp-" + new_id()[:8]
    for i in range(10):
        await submitter.submit(tenant, "mp-slow", "o", f"t{i}", {})
    await hosts.wait_for(lambda e: e[0] == "start" and e[1] == str(victim.pid), 20, "the victim never started a step")
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    await wait_succeeded(submitter, tenant, 10, timeout=60)
    events = hosts.events()
    ended = {(e[2], e[3]) for e in events if e[0] == "end"}
    orphans = {(e[2], e[3]) for e in events if e[0] == "start" and e[1] == str(victim.pid)} - {
        (e[2], e[3]) for e in events if e[0] == "end" and e[1] == str(victim.pid)}
    assert orphans, "the kill did not interrupt any step"
    for key in orphans:
        rerun = min(float(e[4]) for e in events if e[0] == "start" and (e[2], e[3]) == key and e[1] != str(victim.pid))
        assert rerun - killed_at < lease + poll + 1.0, f"{key} waited {rerun - killed_at:.2f}s to run again"
        assert key in ended
    rows, running, crashes = artifact_counts(mysql_admin(database=MP_DB), tenant)
    assert len(rows) == 20 and all(count == 1 for _, _, count, _ in rows), "an output was stored twice"
    assert running == 0
    assert all(crashes[key] == 1 for key in orphans)


async def test_cancel_in_one_process_stops_a_handler_in_another(hosts, submitter):
    lease = 1.5
    await submitter.define_pipeline("mp-long", [
        {"step_name": "long", "step_type": "mp-slow", "config": {"sleep": 60}}])
    hosts.start(1, lease=lease)
    tenant = "mp-" + new_id()[:8]
    task = await submitter.submit(tenant, "mp-long", "o", "long", {})
    await hosts.wait_for(lambda e: e[0] == "start" and e[2] == task["id"], 10, "the step never started")
    await submitter.cancel(tenant, task["id"])
    asked = time.time()
    await hosts.wait_for(lambda e: e[0] == "cancelled" and e[2] == task["id"], lease + 2,
                         "the handler in the other process was not cancelled", interval=0.05)
    seen = next(float(e[4]) for e in hosts.events() if e[0] == "cancelled" and e[2] == task["id"])
    assert seen - asked <= lease + 0.5
    detail = await submitter.detail(tenant, task["id"])
    assert detail["status"] == "cancelled" and detail["steps"][0]["status"] == "cancelled"
    assert (await submitter.node(tenant, task["id"], "long"))["output"] is None


def noticed_trouble(log):
    return "database trouble" in log or "could not be recorded" in log or "cannot extend leases" in log


@pytest.mark.restarts_mariadb
async def test_mariadb_restart_mid_run_every_task_finishes(private_server, private_hosts, private_submitter):
    """The processes' MariaDB (a private one: the machine's server is never touched) is killed
    mid-run and started again: every task finishes, every output is stored once."""
    hosts, submitter = private_hosts, private_submitter
    await submitter.define_pipeline("mp-chain", [
        {"step_name": "a", "step_type": "mp-slow", "config": {"sleep": 0.3}},
        {"step_name": "b", "step_type": "mp-slow", "depends_on": ["a"], "config": {"sleep": 0.3}},
        {"step_name": "c", "step_type": "mp-noop", "depends_on": ["b"]}])
    hosts.start(2, lease=3.0)
    tenant = "mp-" + new_id()[:8]
    for i in range(20):
        await submitter.submit(tenant, "mp-chain", "o", f"t{i}", {})
    deadline = time.monotonic() + 20
    while sum(1 for e in hosts.events() if e[0] == "end") < 10:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    private_server.kill()
    deadline = time.monotonic() + 20
    while not all(noticed_trouble(hosts.stderr(i)) for i in (0, 1)):  # both noticed, then it comes back
        assert time.monotonic() < deadline, "a process never noticed its database was gone"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(private_server.start)
    await wait_succeeded(submitter, tenant, 20, timeout=120)
    rows, running, _ = artifact_counts(private_server.admin(database="pipeline"), tenant)
    assert len(rows) == 60 and all(count == 1 for _, _, count, _ in rows)
    assert running == 0


async def test_sqlite_refuses_a_second_process(tmp_path):
    path = tmp_path / "single.db"
    svc = PipelineService(f"sqlite:///{path}", create_schema=True, autostart=False)
    code = ("import asyncio\nfrom pipeline_service import Storage\n"
            f"st = Storage.from_description('sqlite:///{path}')\n"
            "async def main():\n    async with st.transaction() as tx: pass\n"
            "try:\n    asyncio.run(main())\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    try:
        await svc.start()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    finally:
        await svc.stop()
    assert "StorageError" in done.stdout and "in use by another process" in done.stdout, done.stdout + done.stderr
    assert "use MySQL/MariaDB" in done.stdout


async def paused_after_a(submitter, tenant, task_id):
    detail = await submitter.detail(tenant, task_id)
    return detail if [s["status"] for s in detail["steps"]] == ["succeeded", "pending"] else None


def step_ready_at(url, task_id, step_name):
    conn = mysql_admin(database=url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ready_at FROM pipeline_task_steps WHERE task_id = %s AND step_name = %s",
                        (task_id, step_name))
            return cur.fetchone()[0]
    finally:
        conn.close()


async def test_pause_in_one_process_holds_steps_in_another(hosts, submitter, mp_db):
    await submitter.define_pipeline("mp-pause", [
        {"step_name": "a", "step_type": "mp-slow", "config": {"sleep": 1.0}},
        {"step_name": "b", "step_type": "mp-noop", "depends_on": ["a"]}])
    hosts.start(1)
    tenant = "mp-" + new_id()[:8]
    task = await submitter.submit(tenant, "mp-pause", "o", "pause", {})
    await hosts.wait_for(lambda e: e[0] == "start" and e[2] == task["id"], 10, "the step never started")
    await submitter.pause(tenant, task["id"])
    # a finishes in the other process and is recorded there; b, decided while its task is
    # paused, is held: pending with no ready time, which no claim of any process takes
    detail = await until(lambda: paused_after_a(submitter, tenant, task["id"]), what="a's outcome recorded")
    assert detail["status"] == "paused"
    assert step_ready_at(mp_db, task["id"], "b") is None, "b was made ready in a paused task"
    assert [(e[0], e[3]) for e in hosts.events() if e[2] == task["id"]] == [("start", "a"), ("end", "a")]
    resumed = time.time()
    await submitter.resume(tenant, task["id"])
    await wait_succeeded(submitter, tenant, 1, timeout=10)
    b_start = next(float(e[4]) for e in hosts.events() if e[2] == task["id"] and e[3] == "b")
    assert b_start >= resumed - 0.05
