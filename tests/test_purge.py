"""Retention and purge on MariaDB and SQLite: whole finished tasks, old artifact versions of
finished tasks; never a running, paused or pending task; tenants apart; dry runs; a purge
killed mid-way finishes when run again."""
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_service import InvalidInputError, NotFoundError, PipelineService
from conftest import until

ROOT = Path(__file__).resolve().parent.parent
CHAIN = [{"step_name": "a"}, {"step_name": "b", "depends_on": ["a"]}]


def chain(step_type):
    return [dict(s, step_type=step_type) for s in CHAIN]


async def echo(tenant_id, task_id, step_name, input_data, config):
    return {"by": step_name, "from": {k: v.get("n") for k, v in input_data.get("upstream", {}).items()},
            "n": input_data["params"].get("n", 0)}


async def exists(service, tenant, task_id):
    try:
        await service.detail(tenant, task_id)
        return True
    except NotFoundError:
        return False


async def artifacts_of(service, tenant, task_id):
    return await service.storage.atomic(lambda tx: tx.fetch_all(
        "task_artifact_versions", tenant_id=tenant, task_ids=[task_id]))


async def finished_tasks(stepper, tenant, pipeline_id, n, params=None):
    tasks = [await stepper.submit(tenant, pipeline_id, "o", f"t{i}", params or {}) for i in range(n)]
    while (await stepper.executor.run_once()).claims:
        pass
    return tasks


async def test_purge_deletes_finished_tasks_only_of_its_tenant_and_a_dry_run_nothing(service, tenant, pipeline_id,
                                                                                   step_type):
    gate = asyncio.Event()

    async def handler(tenant_id, task_id, step_name, input_data, config):
        if input_data["params"].get("hold"):
            await gate.wait()
        if input_data["params"].get("fail"):
            raise RuntimeError("broken on purpose")
        return {"by": step_name}
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, chain(step_type))
    done = await service.submit(tenant, pipeline_id, "o", "done", {})
    failed = await service.submit(tenant, pipeline_id, "o", "failed", {"fail": True})
    cancelled = await service.submit(tenant, pipeline_id, "o", "cancelled", {"hold": True})
    running = await service.submit(tenant, pipeline_id, "o", "running", {"hold": True})
    paused = await service.submit(tenant, pipeline_id, "o", "paused", {"hold": True})
    other = await service.submit(tenant + "x", pipeline_id, "o", "another tenant's", {})
    for t, status in ((done, "succeeded"), (failed, "failed")):
        assert (await service.wait(tenant, t["id"]))["status"] == status
    assert (await service.wait(tenant + "x", other["id"]))["status"] == "succeeded"
    await until(lambda: _status(service, tenant, running["id"], "running"), what="running")
    await service.cancel(tenant, cancelled["id"])
    await service.pause(tenant, paused["id"])
    finished = sorted(t["id"] for t in (done, failed, cancelled))

    assert (await service.purge(tenant, older_than=1))["tasks"] == []  # all finished just now
    dry = await service.purge(tenant, older_than=0, dry_run=True)
    assert sorted(dry["tasks"]) == finished and dry["dry_run"] is True
    assert dry["steps"] == 6 and dry["artifacts"] == 6  # done: 2 inputs, 2 outputs; the others: a's input
    assert all([await exists(service, tenant, t) for t in finished])
    purged = await service.purge(tenant, older_than=0)
    assert sorted(purged["tasks"]) == finished
    assert (purged["steps"], purged["artifacts"]) == (dry["steps"], dry["artifacts"])
    assert not any([await exists(service, tenant, t) for t in finished])
    assert (await service.detail(tenant, running["id"]))["status"] == "running"
    assert (await service.detail(tenant, paused["id"]))["status"] == "paused"
    assert (await service.detail(tenant + "x", other["id"]))["status"] == "succeeded"
    assert len(await artifacts_of(service, tenant + "x", other["id"])) == 4
    gate.set()
    assert (await service.wait(tenant, running["id"]))["status"] == "succeeded"  # untouched, it goes on
    assert (await service.purge(tenant, older_than=0))["tasks"] == [running["id"]]
    assert (await service.list(tenant))["total"] == 1  # the paused one


async def test_keep_versions_keeps_each_steps_newest_and_what_they_name(stepper, tenant, pipeline_id, step_type):
    stepper.register_handler(step_type, echo)
    await stepper.define_pipeline(pipeline_id, chain(step_type))
    (task,) = await finished_tasks(stepper, tenant, pipeline_id, 1, {"n": 1})
    for n in (2, 3, 4):  # a person edits a's output; b runs again on it each time
        await stepper.modify(tenant, task["id"], {"a": {"output": {"by": "a person", "n": n}}})
        while (await stepper.executor.run_once()).claims:
            pass
    (held,) = await finished_tasks(stepper, tenant, pipeline_id, 1)
    await stepper.modify(tenant, held["id"], {"a": {"output": {"n": 9}}})
    await stepper.pause(tenant, held["id"])  # paused: its versions are never touched
    before = len(await artifacts_of(stepper, tenant, held["id"]))
    b_before = await stepper.node(tenant, task["id"], "b")

    dry = await stepper.purge(tenant, keep_versions=1, dry_run=True)
    assert dry["artifacts"] == 9 and dry["tasks"] == []
    assert len(await artifacts_of(stepper, tenant, task["id"])) == 1 + 4 + 4 + 4
    purged = await stepper.purge(tenant, keep_versions=1)
    assert purged["artifacts"] == 9
    kept = sorted((a["step_name"], a["kind"], a["version"]) for a in await artifacts_of(stepper, tenant, task["id"]))
    # a: its one input and newest output; b: its newest input, and the output made from it
    assert kept == [("a", "input", 1), ("a", "output", 4), ("b", "input", 4), ("b", "output", 4)]
    b = await stepper.node(tenant, task["id"], "b")  # still reads in full: its input refers to a's v4
    assert b["input"] == b_before["input"] == {"params": {"n": 1}, "upstream": {"a": {"by": "a person", "n": 4}}}
    assert b["output"] == b_before["output"]
    with pytest.raises(NotFoundError):
        await stepper.node(tenant, task["id"], "b", version=1)
    assert len(await artifacts_of(stepper, tenant, held["id"])) == before
    assert (await stepper.purge(tenant, keep_versions=1))["artifacts"] == 0  # nothing more to do


async def test_an_input_keeps_an_older_output_it_names(stepper, tenant, pipeline_id, step_type):
    """b's newest input names a's output 1, while a has newer outputs: a's output 1 stays."""
    stepper.register_handler(step_type, echo)
    await stepper.define_pipeline(pipeline_id, chain(step_type))
    (task,) = await finished_tasks(stepper, tenant, pipeline_id, 1)
    # a's output edited twice, b not re-run: b's current input and output still name a's output 1
    await stepper.modify(tenant, task["id"], {"a": {"output": {"n": 2}}, "b": {"output": {"n": 2}}})
    await stepper.modify(tenant, task["id"], {"a": {"output": {"n": 3}}, "b": {"output": {"n": 3}}})
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
    await stepper.purge(tenant, keep_versions=1)
    kept = sorted((a["step_name"], a["kind"], a["version"]) for a in await artifacts_of(stepper, tenant, task["id"]))
    assert kept == [("a", "input", 1), ("a", "output", 1), ("a", "output", 3), ("b", "input", 1), ("b", "output", 3)]
    assert (await stepper.node(tenant, task["id"], "b"))["input"]["upstream"]["a"]["by"] == "a"


async def test_the_retention_policy_fills_in_what_a_purge_is_not_given(make_service, database, tenant, pipeline_id,
                                                                      step_type):
    service = make_service(database, autostart=False, retention={
        "keep_versions": 5, "tenants": {tenant: {"older_than": 0}}})
    await service.storage.create_missing_tables(include_reference=True)
    service.register_handler(step_type, echo)
    await service.define_pipeline(pipeline_id, chain(step_type))
    (task,) = await finished_tasks(service, tenant, pipeline_id, 1)
    purged = await service.purge(tenant)
    assert purged["tasks"] == [task["id"]] and (purged["older_than"], purged["keep_versions"]) == (0, 5)
    assert (await service.purge(tenant + "y"))["older_than"] is None  # the global policy: versions only
    with pytest.raises(InvalidInputError, match="nothing to purge"):
        await make_service(database, autostart=False).purge(tenant)
    for bad in ({"older_than": -1}, {"keep_versions": 0}, {"tenants": {tenant: {"forever": 1}}}, "30 days"):
        with pytest.raises(InvalidInputError, match="retention"):
            make_service(database, retention=bad)
    for kwargs, what in (({"older_than": "1"}, "older_than"), ({"keep_versions": 0}, "keep_versions"),
                         ({"older_than": 1, "dry_run": 1}, "dry_run"), ({"older_than": 1, "batch": 0}, "batch")):
        with pytest.raises(InvalidInputError, match=what):
            await service.purge(tenant, **kwargs)
    with pytest.raises(InvalidInputError, match="tenant_id"):
        await service.purge(" bad", older_than=1)


async def test_a_purge_killed_mid_way_finishes_when_run_again(mysql_schema, make_service, tenant, pipeline_id,
                                                             step_type):
    service = make_service(mysql_schema, autostart=False, concurrency=200)
    service.register_handler(step_type, echo)
    await service.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    n = 400
    await finished_tasks(service, tenant, pipeline_id, n)
    (kept,) = await finished_tasks(service, tenant + "x", pipeline_id, 1)
    assert (await service.list(tenant))["total"] == n
    purging = subprocess.Popen(
        [sys.executable, "-m", "pipeline_service", "purge", "--db", mysql_schema, "--tenant", tenant,
         "--older-than", "0", "--batch", "1"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await until(lambda: _left(service, tenant, n), timeout=60, interval=0.005, what="the purge under way")
        purging.send_signal(signal.SIGKILL)  # mid-way: no clean-up of any kind
        purging.wait(10)
    finally:
        if purging.poll() is None:
            purging.kill()
    left = (await service.list(tenant))["total"]
    assert 0 < left < n, "the purge was to be killed mid-way"
    again = await service.purge(tenant, older_than=0)
    assert len(again["tasks"]) == left and again["steps"] == left and again["artifacts"] == 2 * left
    assert (await service.list(tenant))["total"] == 0
    assert (await service.detail(tenant + "x", kept["id"]))["status"] == "succeeded"


async def _status(service, tenant, task_id, status):
    return (await service.detail(tenant, task_id))["status"] == status


async def _left(service, tenant, n):
    return (await service.list(tenant))["total"] < n


def test_the_purge_command_reports_what_it_did(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    async def setup():
        service = PipelineService(db, create_schema=True, autostart=False)
        await service.storage.create_missing_tables(include_reference=True)
        service.register_handler("echo", echo)
        await service.define_pipeline("p", [{"step_name": "a", "step_type": "echo"}])
        await finished_tasks(service, "acme", "p", 2)
        await service.stop(timeout=1)
    asyncio.run(setup())

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline_service", *args, "--db", db], cwd=ROOT,
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    dry = cli("purge", "--tenant", "acme", "--older-than", "0", "--dry-run")
    assert dry.returncode == 0 and "would delete 2 task(s), 2 step row(s), 4 artifact version(s)" in dry.stdout
    done = cli("purge", "--tenant", "acme", "--older-than", "0")
    assert done.returncode == 0 and "deleted 2 task(s)" in done.stdout
    refused = cli("purge", "--tenant", "acme")
    assert refused.returncode == 1 and "nothing to purge" in refused.stdout


async def test_pipeline_purge_applies_the_default_services_retention_option(tmp_path, tenant):
    """The retention policy as a host gives it (config.json's pipeline_service entry reaches
    configure() as its options)."""
    from pipeline_service import api, pipeline_purge
    api.configure(f"sqlite:///{tmp_path / 'api.db'}", create_schema=True, autostart=False,
                  retention={"keep_versions": 2, "tenants": {tenant: {"older_than": 0}}})
    try:
        mine = await pipeline_purge(tenant, dry_run=True)
        assert (mine["older_than"], mine["keep_versions"], mine["tasks"]) == (0, 2, [])
        assert (await pipeline_purge(tenant + "x"))["older_than"] is None
    finally:
        await api.shutdown()
