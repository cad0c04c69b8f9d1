"""Host processes running the engine (tests/host_process.py, one subprocess each) on a shared
MySQL database, and the test's own front service that submits and reads: for the tests of
several processes (test_processes, test_schedule_processes, test_galera)."""
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

from pipeline_service import PipelineService, StorageError

HOST = Path(__file__).with_name("host_process.py")
ROOT = Path(__file__).resolve().parent.parent
DIAMOND = [
    {"step_name": "a", "step_type": "mp-noop"},
    {"step_name": "b", "step_type": "mp-noop", "depends_on": ["a"]},
    {"step_name": "c", "step_type": "mp-noop", "depends_on": ["a"]},
    {"step_name": "d", "step_type": "mp-noop", "depends_on": ["b", "c"]},
    {"step_name": "e", "step_type": "mp-noop", "depends_on": ["d"]},
]


@asynccontextmanager
async def front_service(db, pipelines=None):
    """The test's own service on ``db``: it submits and reads but runs no step (no executor);
    the tables made, and ``pipelines`` ({id: steps}) defined."""
    svc = PipelineService(db, autostart=False, require_handlers=False)
    try:
        await svc.storage.create_missing_tables(include_reference=True)
        for pipeline_id, steps in (pipelines or {}).items():
            await svc.define_pipeline(pipeline_id, steps)
        yield svc
    finally:
        await svc.stop()


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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


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
