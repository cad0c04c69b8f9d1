"""The main command: the demo runs to completion; operator commands on the same database."""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline_service import PipelineService
from pipeline_service.demo import TENANTS

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline_service", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"))


def statuses(db):
    async def read():
        svc = PipelineService(db, autostart=False, require_handlers=False)
        try:
            return {tenant: [r["status"] for r in (await svc.list(tenant))["rows"]] for tenant in TENANTS}
        finally:
            await svc.storage.close()
    return asyncio.run(read())


def test_demo_runs_to_completion_and_every_task_succeeds(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    done = cli("demo", "--quick", "--db", db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cascade re-run" in done.stdout and "v2 (manual)" in done.stdout
    found = statuses(db)
    assert {t: len(s) for t, s in found.items()} == {t: len(topics) for t, topics in TENANTS.items()}
    assert all(s == "succeeded" for rows in found.values() for s in rows)


def test_operator_commands_read_and_operate(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert cli("demo", "--quick", "--db", db).returncode == 0
    listing = cli("list", "--tenant", "acme", "--db", db, "--json")
    assert listing.returncode == 0, listing.stderr
    task_id = json.loads(listing.stdout)["rows"][-1]["id"]
    detail = cli("detail", "--tenant", "acme", task_id, "--db", db)
    assert detail.returncode == 0 and "review" in detail.stdout and "succeeded" in detail.stdout
    node = cli("node", "--tenant", "acme", task_id, "outline", "--version", "2", "--db", db, "--json")
    assert node.returncode == 0 and json.loads(node.stdout)["output"]["topic"] == "green tea"
    retry = cli("retry", "--tenant", "acme", task_id, "merge", "--db", db, "--json")
    assert retry.returncode == 0 and json.loads(retry.stdout)["rerun"] == ["merge", "review"]
    cancel = cli("cancel", "--tenant", "acme", task_id, "--db", db, "--json")
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["status"] == "cancelled"


def test_operator_command_on_an_unknown_task_says_so_and_fails(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("create-schema", "--with-reference", "--db", db).returncode == 0
    for args in (("detail", "--tenant", "acme", "no-such-task"), ("pause", "--tenant", "acme", "no-such-task"),
                 ("node", "--tenant", "acme", "no-such-task", "a")):
        done = cli(*args, "--db", db)
        assert done.returncode == 2 and "task 'no-such-task' does not exist" in done.stdout, done.stdout
    bad = cli("list", "--tenant", "acme", "--status", "nope", "--db", db)
    assert bad.returncode == 1 and "status must be one of" in bad.stdout


def test_missing_schema_points_to_create_schema(tmp_path):
    done = cli("list", "--tenant", "acme", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert done.returncode == 1 and "create-schema" in done.stdout


def test_signal_gives_a_waiting_approval_its_decision(tmp_path):
    db = f"sqlite:///{tmp_path / 'ask.db'}"
    assert cli("create-schema", "--with-reference", "--db", db).returncode == 0

    async def submit():
        svc = PipelineService(db, autostart=False)
        try:
            await svc.define_pipeline("ask", [{"step_name": "ok", "step_type": "approval"}])
            task = await svc.submit("acme", "ask", "owner")
            await svc.executor.run_once()
            return task["id"], (await svc.detail("acme", task["id"]))["steps"][0]["status"]
        finally:
            await svc.stop()
    task_id, status = asyncio.run(submit())
    assert status == "waiting"
    wrong = cli("signal", "--tenant", "acme", task_id, "ok", "--decision", "maybe", "--db", db)
    assert wrong.returncode == 1 and "one of approve, reject" in wrong.stdout, wrong.stdout
    done = cli("signal", "--tenant", "acme", task_id, "ok", "--decision", "approve", "--actor", "ops",
               "--payload", '{"ticket": 7}', "--db", db, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["id"] == task_id

    async def finish():
        svc = PipelineService(db, autostart=False)
        try:
            await svc.executor.run_once()
            return (await svc.node("acme", task_id, "ok"))["output"]
        finally:
            await svc.stop()
    output = asyncio.run(finish())
    assert output["decision"] == "approve" and output["actor"] == "ops" and output["payload"]["ticket"] == 7
