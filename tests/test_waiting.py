"""Steps that wait without a slot (status ``waiting``): approval, wait, delegate — on MariaDB and
SQLite, through PipelineService as a host uses it.

The built-ins are registered here under step types of the test's own (``step_type`` prefix): the
MariaDB database is shared by the session, and a step left waiting by one test must never be
one another test's service runs.
"""
import asyncio
from datetime import datetime, timezone
import re
import sqlite3

import pymysql
import pytest

from conftest import mysql_parts, scratch_mysql_database, scratch_name, until
from pipeline_service.engine.waiting import MAX_DELEGATION_DEPTH, WAKE_BATCH, WakeRound
from pipeline_service.exceptions import InvalidInputError, InvalidStateError, NotFoundError, StorageError
from pipeline_service.ids import now_ms
from pipeline_service.steps import approval, delegate, wait
from pipeline_service.store.queries import statement
from pipeline_service.waits import Wait


DAY = 86_400


@pytest.fixture
def kinds(step_type):
    return {k: f"{step_type}-{k}" for k in ("approval", "wait", "delegate", "work", "boom")}


async def work(tenant_id, task_id, step_name, input_data, config):
    return {"step": step_name, "upstream": input_data["upstream"], "params": input_data["params"]}


async def boom(tenant_id, task_id, step_name, input_data, config):
    raise RuntimeError("the child broke")


def register(service, kinds):
    service.register_handler(kinds["approval"], approval.run)
    service.register_handler(kinds["wait"], wait.run)
    service.register_handler(kinds["delegate"], delegate.run)
    service.register_handler(kinds["work"], work)
    service.register_handler(kinds["boom"], boom)
    return service


async def step_of(service, tenant, task_id, name):
    return next(s for s in (await service.detail(tenant, task_id))["steps"] if s["step_name"] == name)


async def until_step(service, tenant, task_id, name, status, timeout=15.0):
    async def reached():
        return (await step_of(service, tenant, task_id, name))["status"] == status
    await until(reached, timeout, f"step {name} {status}")


async def until_task(service, tenant, task_id, status, timeout=15.0):
    async def reached():
        return (await service.detail(tenant, task_id))["status"] == status
    await until(reached, timeout, f"task {task_id} {status}")
    return await service.detail(tenant, task_id)


async def approval_line(service, kinds, pipeline_id, **config):
    await service.define_pipeline(pipeline_id, [
        {"step_name": "ask", "step_type": kinds["approval"], "config": {"prompt": "ship it?", **config}},
        {"step_name": "after", "step_type": kinds["work"], "depends_on": ["ask"]}])


# ---- approval ------------------------------------------------------------------------------

async def test_an_approval_waits_without_a_slot_until_a_person_decides(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    told = []
    service.on("step.waiting", told.append)
    await approval_line(service, kinds, pipeline_id)
    task = await service.submit(tenant, pipeline_id, "owner-1", "needs a yes")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    await until(lambda: told, what="step.waiting told")
    assert told[0]["task_id"] == task["id"] and told[0]["step_name"] == "ask"
    assert told[0]["waiting_for"]["prompt"] == "ship it?"
    detail = await service.detail(tenant, task["id"])
    assert detail["status"] == "running" and detail["progress"]["waiting"] == 1
    assert detail["progress"]["running"] == 0 and not service.executor._slots  # no slot held
    listed = (await service.list(tenant))["rows"][0]
    assert listed["progress"]["waiting"] == 1
    ask = await step_of(service, tenant, task["id"], "ask")
    assert ask["waiting_for"] == {"kind": "signal", "until": None, "choices": ["approve", "reject"],
                                  "prompt": "ship it?"}
    await service.signal(tenant, task["id"], "ask", {"decision": "approve", "note": "looks good"}, actor="alice")
    done = await until_task(service, tenant, task["id"], "succeeded")
    assert done["progress"]["waiting"] == 0
    output = (await service.node(tenant, task["id"], "ask"))["output"]
    assert output["decision"] == "approve" and output["actor"] == "alice"
    assert output["payload"] == {"decision": "approve", "note": "looks good"} and output["decided_at"].endswith("Z")
    assert (await service.node(tenant, task["id"], "after"))["output"]["upstream"]["ask"] == output


async def test_a_rejection_fails_the_step_unless_the_config_says_continue(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id)
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    await service.signal(tenant, task["id"], "ask", {"decision": "reject"}, actor="bob")
    failed = await until_task(service, tenant, task["id"], "failed")
    assert (await step_of(service, tenant, task["id"], "ask"))["error"] == "rejected by bob"
    assert "rejected by bob" in failed["error"]
    assert (await step_of(service, tenant, task["id"], "after"))["status"] == "skipped"

    other = pipeline_id + "-c"
    await approval_line(service, kinds, other, on_reject="continue")
    task = await service.submit(tenant, other, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    await service.signal(tenant, task["id"], "ask", {"decision": "reject"}, actor="bob")
    await until_task(service, tenant, task["id"], "succeeded")
    assert (await service.node(tenant, task["id"], "ask"))["output"]["decision"] == "reject"


async def test_an_approval_times_out_as_on_timeout_says(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id, timeout=0.3)
    task = await service.submit(tenant, pipeline_id, "o")
    failed = await until_task(service, tenant, task["id"], "failed")
    assert "no decision within 0.3s" in failed["error"]

    other = pipeline_id + "-t"
    await approval_line(service, kinds, other, timeout=0.3, on_timeout="approve")
    task = await service.submit(tenant, other, "o")
    await until_task(service, tenant, task["id"], "succeeded")
    output = (await service.node(tenant, task["id"], "ask"))["output"]
    assert output["decision"] == "approve" and output["timed_out"] is True and output["actor"] is None


async def test_a_waiting_steps_timeout_has_its_own_bound_of_a_year(service, kinds, tenant, pipeline_id):
    """An approval holds no slot: it may wait 30 days (a handler's timeout stays at most a day,
    and the errors name each limit)."""
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id, timeout=30 * DAY)
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    until_ms = (await step_of(service, tenant, task["id"], "ask"))["waiting_for"]["until"]
    assert abs(until_ms - (now_ms() + 30 * DAY * 1000)) < 60_000
    await service.cancel(tenant, task["id"])

    with pytest.raises(InvalidInputError, match=f"<= 86400 seconds .* for step type '{kinds['work']}'.* up to "
                                                "31622400 seconds"):
        await service.define_pipeline(pipeline_id + "-w", [
            {"step_name": "long", "step_type": kinds["work"], "config": {"timeout": 2 * DAY}}])
    with pytest.raises(InvalidInputError, match=r"config.timeout must be a number of seconds > 0 and <= 31622400"):
        await approval_line(service, kinds, pipeline_id + "-y", timeout=400 * DAY)
    with pytest.raises(InvalidInputError, match="<= 86400 seconds"):  # no handler yet: a handler's bound
        await service.define_pipeline(pipeline_id + "-z", [
            {"step_name": "long", "step_type": kinds["work"] + "-z", "config": {"timeout": 2 * DAY}}])
    # the type's handler replaced by one that runs for its timeout: the submit checks it again
    later = pipeline_id + "-later"
    service.register_handler(kinds["work"] + "-later", approval.run)
    await approval_line(service, {**kinds, "approval": kinds["work"] + "-later"}, later, timeout=2 * DAY)
    service.register_handler(kinds["work"] + "-later", work)
    with pytest.raises(InvalidInputError, match="<= 86400 seconds"):
        await service.submit(tenant, later, "o")
    assert (await service.list(tenant, pipeline_id=later))["total"] == 0  # nothing written


async def test_a_bad_approval_config_fails_the_step_with_a_clear_message(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id, on_timeout="maybe")
    task = await service.submit(tenant, pipeline_id, "o")
    failed = await until_task(service, tenant, task["id"], "failed")
    assert "on_timeout must be 'fail' or one of the choices (approve, reject), got 'maybe'" in failed["error"]


async def test_a_wrong_signal_is_refused_and_changes_nothing(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id, choices=["yes", "no"])
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    before = await service.detail(tenant, task["id"])
    with pytest.raises(InvalidInputError, match="one of yes, no .* got 'approve'"):
        await service.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="a")
    with pytest.raises(InvalidInputError, match="got None"):
        await service.signal(tenant, task["id"], "ask", {"note": "no decision"}, actor="a")
    with pytest.raises(InvalidStateError, match="step 'after' .* is pending: only a step waiting for a signal"):
        await service.signal(tenant, task["id"], "after", {"decision": "yes"}, actor="a")
    with pytest.raises(NotFoundError, match="has no step 'nope'"):
        await service.signal(tenant, task["id"], "nope", {"decision": "yes"}, actor="a")
    with pytest.raises(NotFoundError, match="does not exist"):  # another tenant's task: as if none
        await service.signal(tenant + "-other", task["id"], "ask", {"decision": "yes"}, actor="a")
    for bad in ([], "yes", {"decision": float("nan")}):
        with pytest.raises(InvalidInputError):
            await service.signal(tenant, task["id"], "ask", bad, actor="a")
    with pytest.raises(InvalidInputError):
        await service.signal(tenant, task["id"], "ask", {"decision": "yes"}, actor=7)
    after = await service.detail(tenant, task["id"])
    assert after["steps"] == before["steps"] and after["status"] == "running"
    await service.signal(tenant, task["id"], "ask", {"decision": "yes"}, actor="a")  # still takes a right one
    await until_task(service, tenant, task["id"], "succeeded")
    with pytest.raises(InvalidStateError, match="is succeeded"):
        await service.signal(tenant, task["id"], "ask", {"decision": "no"}, actor="a")
    assert (await service.node(tenant, task["id"], "ask"))["output"]["decision"] == "yes"


async def test_of_racing_signals_exactly_one_wins(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id, choices=[f"c{i}" for i in range(8)])
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    results = await asyncio.gather(*(service.signal(tenant, task["id"], "ask", {"decision": f"c{i}"}, actor=f"p{i}")
                                     for i in range(8)), return_exceptions=True)
    won = [i for i, r in enumerate(results) if isinstance(r, dict)]
    assert len(won) == 1, results
    assert all(isinstance(r, InvalidStateError) for i, r in enumerate(results) if i not in won), results
    await until_task(service, tenant, task["id"], "succeeded")
    output = (await service.node(tenant, task["id"], "ask"))["output"]
    assert output["decision"] == f"c{won[0]}" and output["actor"] == f"p{won[0]}"


async def test_pause_cancel_and_rerun_of_a_waiting_approval(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await approval_line(service, kinds, pipeline_id)
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    # paused: a decision is taken and held; resume lets the step go on with it
    assert (await service.pause(tenant, task["id"]))["status"] == "paused"
    await service.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="carol")
    assert (await step_of(service, tenant, task["id"], "ask"))["status"] == "pending"
    await service.resume(tenant, task["id"])
    await until_task(service, tenant, task["id"], "succeeded")
    # a re-run asks again
    await service.modify(tenant, task["id"], {}, rerun_from="ask")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    with pytest.raises(InvalidStateError):
        await service.signal(tenant, task["id"], "after", {"decision": "approve"}, actor="x")
    await service.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="dave")
    await until_task(service, tenant, task["id"], "succeeded")
    assert (await service.node(tenant, task["id"], "ask"))["output"]["actor"] == "dave"
    # cancelled while it waits
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "ask", "waiting")
    assert (await service.cancel(tenant, task["id"]))["status"] == "cancelled"
    assert (await step_of(service, tenant, task["id"], "ask"))["status"] == "cancelled"
    with pytest.raises(InvalidStateError, match="is cancelled"):
        await service.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="x")


async def test_a_decision_for_a_paused_task_is_held_until_it_resumes(stepper, kinds, tenant, pipeline_id):
    """A signal wakes its step in a paused task without making it ready: no round runs it (nor
    its successor) until the task is resumed; then it goes on with the decision it was given."""
    register(stepper, kinds)
    await approval_line(stepper, kinds, pipeline_id)
    task = await stepper.submit(tenant, pipeline_id, "o")
    await stepper.executor.run_once()  # ask waits for a decision
    await stepper.pause(tenant, task["id"])
    await stepper.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="carol")
    assert (await stepper.executor.run_once()).claims == ()  # held by the pause
    assert (await step_of(stepper, tenant, task["id"], "ask"))["status"] == "pending"
    await stepper.resume(tenant, task["id"])
    (woken,) = (await stepper.executor.run_once()).outcomes
    assert woken.claim.step_name == "ask" and woken.output["decision"] == "approve"
    assert woken.output["actor"] == "carol"


async def test_a_child_task_takes_its_parents_place_in_the_queue(service, kinds, tenant, pipeline_id):
    """A delegate step's child is submitted at its parent's priority: a high priority line's
    sub-lines do not queue behind the tenant's other work."""
    register(service, kinds)
    child_pipeline = pipeline_id + "-child"
    await child_line(service, kinds, child_pipeline)
    await parent_line(service, kinds, pipeline_id, child_pipeline)
    task = await service.submit(tenant, pipeline_id, "o", "urgent", priority=8)
    [child_id] = await until(lambda: children_of(service, tenant, task["id"]), what="a child task")
    assert (await service.detail(tenant, child_id))["priority"] == 8


async def test_a_waiting_approval_survives_restarts(database, make_service, kinds, tenant, pipeline_id):
    first = register(make_service(database, poll_interval=0.1), kinds)
    await first.storage.create_missing_tables(include_reference=True)
    await approval_line(first, kinds, pipeline_id, timeout=3600)
    task = await first.submit(tenant, pipeline_id, "o")
    await until_step(first, tenant, task["id"], "ask", "waiting")
    await first.stop(timeout=5)
    for _ in range(2):  # any number of restarts
        again = register(make_service(database, poll_interval=0.1), kinds)
        await again.start()
        assert (await step_of(again, tenant, task["id"], "ask"))["status"] == "waiting"
        await again.stop(timeout=5)
    last = register(make_service(database, poll_interval=0.1), kinds)
    await last.signal(tenant, task["id"], "ask", {"decision": "approve"}, actor="erin")
    await until_task(last, tenant, task["id"], "succeeded")


# ---- wait ----------------------------------------------------------------------------------

async def test_a_wait_step_is_a_durable_timer_that_holds_no_slot(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "nap", "step_type": kinds["wait"], "config": {"seconds": 0.5}},
        {"step_name": "after", "step_type": kinds["work"], "depends_on": ["nap"]}])
    started = now_ms()
    task = await service.submit(tenant, pipeline_id, "o")
    await until_step(service, tenant, task["id"], "nap", "waiting")
    assert not service.executor._slots
    await until_task(service, tenant, task["id"], "succeeded")
    output = (await service.node(tenant, task["id"], "nap"))["output"]
    assert output["waited_until"].endswith("Z")
    finished = (await step_of(service, tenant, task["id"], "nap"))["finished_at"]
    assert finished is not None and now_ms() - started >= 500


async def test_a_wait_until_a_past_time_ends_at_once_and_a_bad_config_fails(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "nap", "step_type": kinds["wait"], "config": {"until": "2020-01-01T00:00:00Z"}}])
    task = await service.submit(tenant, pipeline_id, "o")
    await until_task(service, tenant, task["id"], "succeeded")
    assert (await service.node(tenant, task["id"], "nap"))["output"] == {"waited_until": "2020-01-01T00:00:00.000Z"}
    for config, message in (({"until": "tomorrow"}, "must be an ISO-8601 time"),
                            ({}, "exactly one of 'seconds'"), ({"seconds": -1}, "seconds must be")):
        bad = f"{pipeline_id}-{len(message)}"
        await service.define_pipeline(bad, [{"step_name": "nap", "step_type": kinds["wait"], "config": config}])
        failed = await until_task(service, tenant, (await service.submit(tenant, bad, "o"))["id"], "failed")
        assert message in failed["error"]


async def test_a_timer_survives_a_restart(database, make_service, kinds, tenant, pipeline_id):
    first = register(make_service(database, poll_interval=0.1), kinds)
    await first.storage.create_missing_tables(include_reference=True)
    await first.define_pipeline(pipeline_id, [
        {"step_name": "nap", "step_type": kinds["wait"], "config": {"seconds": 1.5}}])
    task = await first.submit(tenant, pipeline_id, "o")
    await until_step(first, tenant, task["id"], "nap", "waiting")
    await first.stop(timeout=5)
    second = register(make_service(database, poll_interval=0.1), kinds)
    await second.start()
    await until_task(second, tenant, task["id"], "succeeded")


# ---- delegate ------------------------------------------------------------------------------

async def child_line(service, kinds, pipeline_id, tail="work"):
    await service.define_pipeline(pipeline_id, [
        {"step_name": "first", "step_type": kinds["work"]},
        {"step_name": "second", "step_type": kinds[tail], "depends_on": ["first"]},
        {"step_name": "side", "step_type": kinds["work"]}])


async def parent_line(service, kinds, pipeline_id, child_id, **config):
    await service.define_pipeline(pipeline_id, [
        {"step_name": "sub", "step_type": kinds["delegate"],
         "config": {"pipeline_id": child_id, "params": {"topic": "fish"}, "title": "a sub-line", **config}},
        {"step_name": "after", "step_type": kinds["work"], "depends_on": ["sub"]}])


async def test_a_delegate_step_runs_a_child_task_and_takes_its_sink_outputs(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    child_pipeline = pipeline_id + "-child"
    await child_line(service, kinds, child_pipeline)
    await parent_line(service, kinds, pipeline_id, child_pipeline)
    task = await service.submit(tenant, pipeline_id, "owner-7", "parent")
    done = await until_task(service, tenant, task["id"], "succeeded")
    output = (await service.node(tenant, task["id"], "sub"))["output"]
    child_id = output["child_task_id"]
    assert output["status"] == "succeeded" and set(output["outputs"]) == {"second", "side"}
    assert output["outputs"]["second"]["params"] == {"topic": "fish"}
    assert done["children"] == [{"task_id": child_id, "step_name": "sub", "status": "succeeded"}]
    assert (await step_of(service, tenant, task["id"], "sub"))["waiting_for"]["child_task_id"] == child_id
    child = await service.detail(tenant, child_id)
    assert child["parent"] == {"task_id": task["id"], "step_name": "sub"}
    assert child["owner_id"] == "owner-7" and child["title"] == "a sub-line" and child["params"] == {"topic": "fish"}
    assert done["parent"] is None


async def test_a_child_whose_sink_writes_a_long_draft_hands_it_whole_to_the_delegate_step(
        service, kinds, tenant, pipeline_id):
    """A child's draft longer than compress_above is stored compressed: the delegate step still
    takes it whole (the child's outputs are read as every artifact is, not from its text column)."""
    draft = "草稿 — première ébauche; " * 2000  # ~50 KB of UTF-8: above the default 8 KB threshold

    async def drafting(tenant_id, task_id, step_name, input_data, config):
        return {"draft": draft}
    register(service, kinds)
    service.register_handler(kinds["work"] + "-draft", drafting)
    child_pipeline = pipeline_id + "-writer"
    await service.define_pipeline(child_pipeline, [{"step_name": "write", "step_type": kinds["work"] + "-draft"}])
    await parent_line(service, kinds, pipeline_id, child_pipeline)
    task = await service.submit(tenant, pipeline_id, "o", "a long draft")
    await until_task(service, tenant, task["id"], "succeeded")
    output = (await service.node(tenant, task["id"], "sub"))["output"]
    assert output["status"] == "succeeded" and output["outputs"] == {"write": {"draft": draft}}
    after = (await service.node(tenant, task["id"], "after"))["output"]
    assert after["upstream"]["sub"]["outputs"]["write"]["draft"] == draft


async def test_a_purge_keeps_a_finished_child_until_its_parent_has_taken_its_outputs(
        stepper, kinds, tenant, pipeline_id):
    """A child task that has ended is finished, but its parent's delegate step has not read its
    outputs yet (its parent was paused: the step is woken but held): a purge leaves the child until
    the parent has ended, so the step does not fail for a child that no longer exists."""
    register(stepper, kinds)
    child_pipeline = pipeline_id + "-child"
    await child_line(stepper, kinds, child_pipeline)
    await parent_line(stepper, kinds, pipeline_id, child_pipeline)
    task = await stepper.submit(tenant, pipeline_id, "o", "parent")
    await stepper.executor.run_once()  # the delegate step submits its child and waits
    [child_id] = await children_of(stepper, tenant, task["id"])
    while (await stepper.executor.run_once()).claims:  # the child runs to its end: the step is due
        pass
    assert (await stepper.detail(tenant, child_id))["status"] == "succeeded"
    await stepper.pause(tenant, task["id"])  # before the parent's step is woken: held once woken
    assert (await stepper.waiting.wake_due(now_ms())).woken >= 1  # across tenants: other tests' too
    assert (await step_of(stepper, tenant, task["id"], "sub"))["status"] == "pending"  # woken, held
    ended = now_ms()
    await until(lambda: now_ms() > ended)  # older_than=0: finished before now, to the millisecond
    purged = await stepper.purge(tenant, older_than=0)
    assert child_id not in purged["tasks"]
    await stepper.resume(tenant, task["id"])
    while (await stepper.executor.run_once()).claims:
        pass
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded", detail
    output = (await stepper.node(tenant, task["id"], "sub"))["output"]
    assert output["child_task_id"] == child_id and set(output["outputs"]) == {"second", "side"}
    purged = await stepper.purge(tenant, older_than=0)  # both ended now: both may go
    assert {task["id"], child_id} <= set(purged["tasks"])


async def test_a_failed_or_cancelled_child_fails_the_delegate_step(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    child_pipeline = pipeline_id + "-child"
    await child_line(service, kinds, child_pipeline, tail="boom")
    await parent_line(service, kinds, pipeline_id, child_pipeline)
    task = await service.submit(tenant, pipeline_id, "o")
    failed = await until_task(service, tenant, task["id"], "failed")
    assert "failed: step 'second' failed: RuntimeError: the child broke" in failed["error"]

    waiting_child = pipeline_id + "-waits"
    await approval_line(service, kinds, waiting_child)
    parent = pipeline_id + "-p2"
    await parent_line(service, kinds, parent, waiting_child)
    task = await service.submit(tenant, parent, "o")
    child_id = await until(lambda: children_of(service, tenant, task["id"]), what="a child task")
    await until_step(service, tenant, child_id[0], "ask", "waiting")
    await service.cancel(tenant, child_id[0])  # the child, cancelled by a person
    failed = await until_task(service, tenant, task["id"], "failed")
    assert f"child task {child_id[0]} cancelled" in failed["error"]


async def children_of(service, tenant, task_id):
    return [c["task_id"] for c in (await service.detail(tenant, task_id))["children"]]


async def parent_of_a_waiting_child(service, kinds, tenant, pipeline_id):
    """A task whose delegate step waits for its child task, whose approval waits: (task, child id)."""
    register(service, kinds)
    waiting_child = pipeline_id + "-waits"
    await approval_line(service, kinds, waiting_child)
    await parent_line(service, kinds, pipeline_id, waiting_child)
    task = await service.submit(tenant, pipeline_id, "o")
    [child] = await until(lambda: children_of(service, tenant, task["id"]), what="a child task")
    await until_step(service, tenant, child, "ask", "waiting")
    return task, child


async def test_cancelling_or_pausing_the_parent_does_the_same_to_the_child(service, kinds, tenant, pipeline_id):
    task, child = await parent_of_a_waiting_child(service, kinds, tenant, pipeline_id)
    assert (await step_of(service, tenant, task["id"], "sub"))["status"] == "waiting"

    await service.pause(tenant, task["id"])
    assert (await service.detail(tenant, child))["status"] == "paused"
    await service.signal(tenant, child, "ask", {"decision": "approve"}, actor="x")  # held while paused
    await service.resume(tenant, task["id"])
    assert (await service.detail(tenant, child))["status"] != "paused"
    await until_task(service, tenant, task["id"], "succeeded")

    task = await service.submit(tenant, pipeline_id, "o")
    [child] = await until(lambda: children_of(service, tenant, task["id"]), what="a child task")
    await until_step(service, tenant, child, "ask", "waiting")
    await service.cancel(tenant, task["id"])
    assert (await service.detail(tenant, child))["status"] == "cancelled"
    assert (await step_of(service, tenant, task["id"], "sub"))["status"] == "cancelled"


class RefusedWrites:
    """A trigger of the database's own that refuses every change of one task's status: the write of
    that task fails as a real database failure does (what a crash between two commits would cut)."""

    def __init__(self, backend, database, task_id):
        self.backend, self.database, self.task_id = backend, database, task_id
        self.name = "refuse_" + "".join(c if c.isalnum() else "_" for c in task_id)

    def _run(self, statement):
        if self.backend == "mysql":
            parts = mysql_parts(self.database)
            conn = pymysql.connect(autocommit=True, database=parts.pop("db"), **parts)
        else:
            conn = sqlite3.connect(self.database.removeprefix("sqlite:///"), timeout=10, isolation_level=None)
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def __enter__(self):
        if self.backend == "mysql":
            self._run(f"CREATE TRIGGER {self.name} BEFORE UPDATE ON pipeline_tasks FOR EACH ROW BEGIN "
                      f"IF NEW.id = '{self.task_id}' AND NEW.status <> OLD.status THEN "
                      "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected: this task cannot be written'; "
                      "END IF; END")
        else:
            self._run(f"CREATE TRIGGER {self.name} BEFORE UPDATE OF status ON pipeline_tasks "
                      f"WHEN NEW.id = '{self.task_id}' AND NEW.status <> OLD.status "
                      "BEGIN SELECT RAISE(ABORT, 'injected: this task cannot be written'); END")
        return self

    def __exit__(self, *exc):
        self._run(f"DROP TRIGGER IF EXISTS {self.name}")


async def statuses(service, tenant, *task_ids):
    return [(await service.detail(tenant, t))["status"] for t in task_ids]


async def test_a_parents_pause_resume_and_cancel_commit_with_its_childrens(service, backend, database, kinds, tenant,
                                                                          pipeline_id):
    """The child's write fails: the parent's change is not committed either (no parent paused or
    cancelled over a child still running); once the child can be written, both change together."""
    task, child = await parent_of_a_waiting_child(service, kinds, tenant, pipeline_id)
    both = (task["id"], child)
    with RefusedWrites(backend, database, child):
        for change in (service.pause, service.cancel):
            with pytest.raises(StorageError, match="injected"):
                await change(tenant, task["id"])
            assert await statuses(service, tenant, *both) == ["running", "running"]
    await service.pause(tenant, task["id"])
    assert await statuses(service, tenant, *both) == ["paused", "paused"]
    with RefusedWrites(backend, database, child):
        with pytest.raises(StorageError, match="injected"):
            await service.resume(tenant, task["id"])
        assert await statuses(service, tenant, *both) == ["paused", "paused"]
    await service.resume(tenant, task["id"])  # resume reaches the paused child
    assert await statuses(service, tenant, *both) == ["running", "running"]
    await service.cancel(tenant, task["id"])
    assert await statuses(service, tenant, *both) == ["cancelled", "cancelled"]
    assert (await step_of(service, tenant, child, "ask"))["status"] == "cancelled"


async def test_a_rerun_of_a_delegate_step_cancels_its_old_child(service, kinds, tenant, pipeline_id):
    task, old = await parent_of_a_waiting_child(service, kinds, tenant, pipeline_id)
    await service.modify(tenant, task["id"], {}, rerun_from="sub")
    assert (await service.detail(tenant, old))["status"] == "cancelled"
    new = await until(lambda: _second_child(service, tenant, task["id"]), what="a new child")
    assert new != old and (await children_of(service, tenant, task["id"]))[0] == old
    await until_step(service, tenant, new, "ask", "waiting")
    await service.signal(tenant, new, "ask", {"decision": "approve"}, actor="x")
    await until_task(service, tenant, task["id"], "succeeded")


async def _second_child(service, tenant, task_id):
    children = await children_of(service, tenant, task_id)
    return children[1] if len(children) == 2 else None


async def test_delegation_depth_and_cycles_fail_with_clear_errors(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "again", "step_type": kinds["delegate"], "config": {"pipeline_id": pipeline_id}}])
    failed = await until_task(service, tenant, (await service.submit(tenant, pipeline_id, "o"))["id"], "failed")
    assert f"delegation cycle: pipeline {pipeline_id!r} already runs above step 'again'" in failed["error"]
    assert not failed["children"]  # nothing was submitted

    chain = [f"{pipeline_id}-d{i}" for i in range(MAX_DELEGATION_DEPTH + 1)]
    await service.define_pipeline(chain[-1], [{"step_name": "leaf", "step_type": kinds["work"]}])
    for here, below in zip(chain, chain[1:]):
        await service.define_pipeline(here, [
            {"step_name": "down", "step_type": kinds["delegate"], "config": {"pipeline_id": below}}])
    top = await service.submit(tenant, chain[0], "o")
    failed = await until_task(service, tenant, top["id"], "failed", timeout=30)
    assert "delegation too deep" in failed["error"]
    assert f"at most {MAX_DELEGATION_DEPTH} tasks form one chain" in failed["error"]

    await service.define_pipeline(pipeline_id + "-x", [
        {"step_name": "nowhere", "step_type": kinds["delegate"], "config": {"pipeline_id": "no-such-pipeline"}}])
    failed = await until_task(service, tenant, (await service.submit(tenant, pipeline_id + "-x", "o"))["id"], "failed")
    assert "pipeline 'no-such-pipeline' does not exist" in failed["error"]


async def test_a_delegate_waiting_for_its_child_survives_a_restart(database, make_service, kinds, tenant,
                                                                    pipeline_id):
    first = make_service(database, poll_interval=0.1)
    await first.storage.create_missing_tables(include_reference=True)
    task, child = await parent_of_a_waiting_child(first, kinds, tenant, pipeline_id)
    await first.stop(timeout=5)
    second = register(make_service(database, poll_interval=0.1), kinds)
    await second.signal(tenant, child, "ask", {"decision": "approve"}, actor="x")
    await until_task(second, tenant, task["id"], "succeeded")


# ---- finding the due ones ------------------------------------------------------------------

def bound(sql, **values):
    """A named statement with its parameters written in (for EXPLAIN: numbers and quoted names only)."""
    for name, value in values.items():
        sql = sql.replace("${" + name + "}$", str(value))
    return sql


async def test_the_due_waiting_steps_are_found_in_the_due_index_not_by_a_scan(backend, tmp_path, make_service,
                                                                              step_type, tenant, pipeline_id):
    """300 steps wait with a deadline: the probe's next_due is the first entry of the `due`
    (status, ready_at) index (MariaDB: a MIN "optimized away", no entry read one by one), and
    wake_due's look-up a range of it in its order (no sort); SQLite's plans search the same index."""
    database = (scratch_mysql_database(scratch_name("due")) if backend == "mysql"
                else f"sqlite:///{tmp_path / 'due.db'}")
    service = make_service(database, autostart=False, concurrency=1000)
    await service.storage.create_missing_tables(include_reference=True)
    service.register_handler(step_type, approval.run)
    await service.define_pipeline(pipeline_id, [
        {"step_name": f"ask{i}", "step_type": step_type, "config": {"timeout": 3600}} for i in range(50)])
    for _ in range(6):
        await service.submit(tenant, pipeline_id, "o")
    assert len((await service.executor.run_once()).claims) == 300
    now = now_ms()
    probe = bound(statement("probe", backend), now=now, step_types=f"'{step_type}'")
    due = bound(statement("due_waiting_steps", backend), now=now, limit=100)
    next_due = re.search(r"\(SELECT MIN\(ready_at\)[^()]*(\([^()]*\))?[^()]*WHERE status = '[a-z]+'\) AS next_due",
                         probe).group(0).removesuffix(" AS next_due")
    if backend == "mysql":
        parts = mysql_parts(database)
        conn = pymysql.connect(autocommit=True, database=parts.pop("db"), **parts)
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("EXPLAIN SELECT " + next_due)
            assert any(r["Extra"] == "Select tables optimized away" for r in cur.fetchall())
            cur.execute("EXPLAIN " + due)
            [plan] = cur.fetchall()
            assert plan["key"] == "pipeline_task_steps_due" and "filesort" not in (plan["Extra"] or "")
            cur.execute("FLUSH STATUS")
            cur.execute(probe)
            cur.execute("SHOW SESSION STATUS LIKE 'Handler_read_next'")
            assert int(cur.fetchone()["Value"]) < 50  # not the 300 waiting entries
        conn.close()
    else:
        conn = sqlite3.connect(database.removeprefix("sqlite:///"))
        for sql in ("SELECT " + next_due, due):
            plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "INDEX pipeline_task_steps_due (status=?" in plan, plan
        conn.close()
    assert await service.waiting.wake_due(now + 3_600_000) == WakeRound(100, True)  # a batch, in ready_at order


async def test_more_timers_due_at_once_than_a_wake_batch_are_all_woken_at_their_time(
        make_service, database, kinds, tenant, pipeline_id):
    """More timers fall due at the same moment than one wake transaction takes (WAKE_BATCH): a
    full batch has the executor probe again at once, so the last of them does not wait for the
    next poll (here 5 s later)."""
    count = WAKE_BATCH + 50
    service = register(make_service(database, poll_interval=5.0, concurrency=count + 10, autostart=False), kinds)
    await service.storage.create_missing_tables(include_reference=True)
    seen = {"step.waiting": 0, "step.succeeded": 0}
    service.on("*", lambda event: event["tenant_id"] == tenant and seen.__setitem__(
        event["event"], seen.get(event["event"], 0) + 1))
    due = now_ms() + 3000
    until_iso = datetime.fromtimestamp(due / 1000, tz=timezone.utc).isoformat()
    await service.define_pipeline(pipeline_id, [{"step_name": "timer", "step_type": kinds["wait"],
                                                 "config": {"until": until_iso}}])
    await asyncio.gather(*(service.submit(tenant, pipeline_id, "o", f"timer {i}") for i in range(count)))
    await service.start()
    await until(lambda: seen["step.waiting"] == count, 20, "every timer waiting")
    assert now_ms() < due, "the machine was too slow to set the timers before they fell due"
    await until(lambda: seen["step.succeeded"] == count, (due - now_ms()) / 1000 + 20, "every timer done")
    late = now_ms() - due
    assert late < 4000, f"the last timer ended {late} ms after its time: the next poll (5 s) or later"


# ---- the Wait record ---------------------------------------------------------------------

def test_a_wait_is_checked_where_it_is_made():
    assert Wait.signal(["a", "b"], 5, "ok?").stored() == {"kind": "signal", "until": 5, "choices": ["a", "b"],
                                                          "prompt": "ok?"}
    assert Wait.task("p", {"x": 1}).stored("c1") == {"kind": "task", "until": None, "child_task_id": "c1"}
    for bad in (lambda: Wait.timer(-1), lambda: Wait.timer(True), lambda: Wait.signal([]),
                lambda: Wait.signal(["a", "a"]), lambda: Wait.signal("ab"), lambda: Wait.task(""),
                lambda: Wait.task("p", {"x": float("nan")}), lambda: Wait("nap").checked()):
        with pytest.raises(InvalidInputError):
            bad()


async def test_the_configs_of_waiting_steps_are_templated_like_any_steps(service, kinds, tenant, pipeline_id):
    register(service, kinds)
    child_pipeline = pipeline_id + "-child"
    await child_line(service, kinds, child_pipeline)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "ask", "step_type": kinds["approval"],
         "config": {"prompt": "publish {{ params.topic }}?", "choices": ["yes", "no"]}},
        {"step_name": "sub", "step_type": kinds["delegate"], "depends_on": ["ask"],
         "config": {"pipeline_id": child_pipeline, "title": "for {{ upstream.ask.actor }}",
                    "params": {"topic": "{{ params.topic }}", "decided": "{{ upstream.ask.decision }}"}}}])
    task = await service.submit(tenant, pipeline_id, "o", params={"topic": "tea; rm -rf ~"})
    await until_step(service, tenant, task["id"], "ask", "waiting")
    assert (await step_of(service, tenant, task["id"], "ask"))["waiting_for"]["prompt"] == "publish tea; rm -rf ~?"
    await service.signal(tenant, task["id"], "ask", {"decision": "yes"}, actor="fay")
    await until_task(service, tenant, task["id"], "succeeded")
    child = (await service.node(tenant, task["id"], "sub"))["output"]["child_task_id"]
    detail = await service.detail(tenant, child)
    assert detail["params"] == {"topic": "tea; rm -rf ~", "decided": "yes"} and detail["title"] == "for fay"
