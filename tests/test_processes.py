"""Several real host processes (subprocesses) on one real MariaDB: scale-out and crashes."""
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline_service import PipelineService, StorageError
from pipeline_service.ids import new_id
from conftest import IN_CI, mysql_admin, scratch_mysql_database, scratch_name
from private_mariadb import INSTALL_DB, MARIADBD, PrivateMariaDB

MP_DB = scratch_name("mp")
pytestmark = pytest.mark.slow

HOST = Path(__file__).with_name("host_process.py")
ROOT = Path(__file__).resolve().parent.parent
DIAMOND = [
    {"step_name": "a", "step_type": "mp-noop"},
    {"step_name": "b", "step_type": "mp-noop", "depends_on": ["a"]},
    {"step_name": "c", "step_type": "mp-noop", "depends_on": ["a"]},
    {"step_name": "d", "step_type": "mp-noop", "depends_on": ["b", "c"]},
    {"step_name": "e", "step_type": "mp-noop", "depends_on": ["d"]},
]


class Hosts:
    def __init__(self, db, tmp_path):
        self.db, self.log, self.procs = db, tmp_path / "events.log", []
        self.tmp_path = tmp_path

    def start(self, n=1, lease=2.0, poll=0.2):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for _ in range(n):
            err = open(self.tmp_path / f"host{len(self.procs)}.err", "w")
            proc = subprocess.Popen([sys.executable, str(HOST), "--db", self.db, "--log", str(self.log),
                                     "--lease", str(lease), "--poll", str(poll)],
                                    stdout=subprocess.PIPE, stderr=err, env=env, text=True)
            assert proc.stdout.readline().strip() == "ready", "a host process did not start"
            self.procs.append(proc)
        return self.procs[-n:]

    def events(self):
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    async def wait_for(self, seen, timeout, message, interval=0.02):
        """Wait until ``seen(event)`` holds for an event in the log; fail with ``message`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not any(seen(e) for e in self.events()):
            assert time.monotonic() < deadline, message
            await asyncio.sleep(interval)

    def stderr(self, i):
        return (self.tmp_path / f"host{i}.err").read_text()

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def mp_db():
    return scratch_mysql_database(MP_DB)


@pytest.fixture
async def hosts(mp_db, tmp_path):
    h = Hosts(mp_db, tmp_path)
    yield h
    h.stop()


@pytest.fixture
async def submitter(mp_db):
    """The test's own service: it submits and reads but runs no step (no executor)."""
    svc = PipelineService(mp_db, autostart=False, require_handlers=False)
    await svc.storage.create_missing_tables(include_reference=True)
    yield svc
    await svc.stop()


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
    h = Hosts(private_server.database("pipeline"), tmp_path)
    yield h
    h.stop()  # before the server goes (this fixture is torn down first)


@pytest.fixture
async def private_submitter(private_hosts):
    svc = PipelineService(private_hosts.db, autostart=False, require_handlers=False)
    await svc.storage.create_missing_tables(include_reference=True)
    yield svc
    await svc.stop()


async def wait_succeeded(svc, tenant, n, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await svc.list(tenant, status="succeeded", rows=1))["total"] >= n:
                return
        except StorageError:
            pass  # the database may be restarting
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} tasks succeeded in {timeout}s; {await where_things_are(svc, tenant)}")
        await asyncio.sleep(0.1)


async def where_things_are(svc, tenant):
    """Task and step counts by status, for a timeout's message (what was stuck where)."""
    tasks = {s: (await svc.list(tenant, status=s, rows=1))["total"] for s in
             ("pending", "running", "paused", "succeeded", "failed", "cancelled")}
    async with svc.storage.transaction() as tx:
        listed = (await tx.fetch_all("list_tasks", tenant_id=tenant, pipeline_id=None, status=None, limit=1000,
                                     offset=0))
        steps = Counter()
        for task in listed:
            for step in await tx.fetch_all("get_steps", tenant_id=tenant, task_id=task["id"]):
                steps[(step["status"], step["ready_at"] is not None, step["owner"])] += 1
    return f"tasks by status {tasks}; steps by (status, ready, owner) {dict(steps)}"


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


async def test_pause_in_one_process_holds_steps_in_another(hosts, submitter):
    await submitter.define_pipeline("mp-pause", [
        {"step_name": "a", "step_type": "mp-slow", "config": {"sleep": 1.0}},
        {"step_name": "b", "step_type": "mp-noop", "depends_on": ["a"]}])
    hosts.start(1)
    tenant = "mp-" + new_id()[:8]
    task = await submitter.submit(tenant, "mp-pause", "o", "pause", {})
    await hosts.wait_for(lambda e: e[0] == "start" and e[2] == task["id"], 10, "the step never started")
    await submitter.pause(tenant, task["id"])
    await asyncio.sleep(2.0)  # a finishes in the other process; b must not start
    assert [(e[0], e[3]) for e in hosts.events() if e[2] == task["id"]] == [("start", "a"), ("end", "a")]
    detail = await submitter.detail(tenant, task["id"])
    assert detail["status"] == "paused" and [s["status"] for s in detail["steps"]] == ["succeeded", "pending"]
    resumed = time.time()
    await submitter.resume(tenant, task["id"])
    await wait_succeeded(submitter, tenant, 1, timeout=10)
    b_start = next(float(e[4]) for e in hosts.events() if e[2] == task["id"] and e[3] == "b")
    assert b_start >= resumed - 0.05
