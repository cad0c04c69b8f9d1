"""Deploys of a real host: the real ahserver booted from a production-style config.json
(encrypted password, non-root user, driver aiomysql, a log file), restarted with
SIGTERM twice while a long step runs.  The executor starts with the server (nobody
calls), a graceful stop hands its claim back at once, and the task finishes with no
attempt and no crash counted against it."""
import time
from pathlib import Path

import pytest

from pipeline_service import PipelineService
from conftest import mysql_admin, mysql_parts, scratch_mysql_database, scratch_name, until
from hosting import Host, write_host

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
DB = scratch_name("deploy")
USER, PASSWORD = "pipeline_deploy", "d3ploy pa$$ word"
LONG_STEP = 4.0      # seconds: far longer than the stop grace below (stop_timeout 1 s)
POLL = 0.2
LEASE = 30.0         # a lease that expired would take far longer than a hand-back


def events(path, event, step):
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.split()[0] == event and line.split()[3] == step)


def step_row(task_id, step_name):
    conn = mysql_admin(database=DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status, ready_at, owner, crash_count, attempt - attempt_base FROM pipeline_task_steps "
                        "WHERE task_id = %s AND step_name = %s", (task_id, step_name))
            return dict(zip(("status", "ready_at", "owner", "crash_count", "run_attempt"), cur.fetchone()))
    finally:
        conn.close()


@pytest.fixture
async def admin():
    """What an operator's script does once: the schema and the line's definition."""
    scratch_mysql_database(DB)
    parts = mysql_parts()
    service = PipelineService(f"mysql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}/{DB}",
                              autostart=False, require_handlers=False)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline("deploy-line", [
        {"step_name": "long", "step_type": "deploy.slow", "config": {"seconds": LONG_STEP}},
        {"step_name": "after", "step_type": "deploy.slow", "depends_on": ["long"], "config": {"seconds": 0}},
    ])
    yield service
    await service.stop()


async def test_two_deploys_during_a_long_step_cost_no_attempt_and_no_crash(admin, tmp_path):
    workdir = write_host(tmp_path / "host", ROOT / "tests" / "deploy_host" / "app", DB, USER, PASSWORD,
                         options={"poll_interval": POLL, "lease_seconds": LEASE, "stop_timeout": 1})
    log = tmp_path / "events.log"
    task = await admin.submit("org-1", "deploy-line", "ops", "deployed twice", {})
    hosts = []
    try:
        for deploy in (1, 2):
            host = Host(workdir, env={"DEPLOY_EVENTS": str(log)}).wait_listening()
            hosts.append(host)
            started = time.monotonic()
            # nobody calls the host: its executor starts with the server and takes the step
            await until(lambda: events(log, "start", "long") == deploy, LEASE / 2, f"run {deploy} of the long step")
            assert time.monotonic() - started < LEASE / 2
            assert host.terminate() == 0, host.log()
            # a graceful stop hands the claim back at once: ready for anyone, no crash counted
            row = step_row(task["id"], "long")
            assert row["status"] == "pending" and row["ready_at"] is not None and row["owner"] is None, row
            assert row["crash_count"] == 0
        host = Host(workdir, env={"DEPLOY_EVENTS": str(log)}).wait_listening()
        hosts.append(host)
        await until(lambda: events(log, "end", "after") == 1, LONG_STEP * 4, "the task to finish")
        detail = await admin.wait("org-1", task["id"], timeout=10)
        assert host.terminate() == 0, host.log()
    finally:
        for host in hosts:
            host.kill()
    assert detail["status"] == "succeeded", detail
    long_step = next(s for s in detail["steps"] if s["step_name"] == "long")
    assert long_step["attempt"] == 1 and long_step["error"] is None  # the deploys cost no attempt
    assert step_row(task["id"], "long")["crash_count"] == 0
    assert (events(log, "start", "long"), events(log, "end", "long")) == (3, 1)
    host_log = (workdir / "host.log").read_text()  # the host's own log file, through appPublic's logger
    assert "pipeline_service started on MySQL database" in host_log and "pipeline_service stopped" in host_log
