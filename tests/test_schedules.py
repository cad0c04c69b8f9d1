"""Schedules on MariaDB and SQLite: ticks found by the executor's probe, catch-up after a gap,
overlap policies, daylight saving time in a non-UTC zone, pause and resume, run now, and bad
input that writes nothing.  Most tests fire ticks by hand (``schedules.fire_due(now)``, the
call the executor's poll makes) with the clock given, so nothing depends on timing."""
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline_service import InvalidInputError, InvalidStateError, NotFoundError, PipelineService
from pipeline_service.ids import now_ms
from pipeline_service.steps import approval, delegate
from pipeline_service.ticks import ON_TIME_MS
from conftest import scratch_mysql_database, scratch_name, until

MINUTE = 60_000


@pytest.fixture
def database(backend, tmp_path):
    """A database of this test's own: a tick fired by hand with another clock fires every
    schedule due by then, other tests' too (a tick is found across tenants, as by the executor)."""
    if backend == "mysql":
        return scratch_mysql_database(scratch_name("sched"))
    return f"sqlite:///{tmp_path / 'schedules.db'}"


@pytest.fixture
async def line(stepper, pipeline_id, step_type):
    """The stepper (no executor loop: tasks stay pending unless the test runs them) with a one-step pipeline."""
    async def work(tenant_id, task_id, step_name, input_data, config):
        return {"params": input_data["params"]}
    stepper.register_handler(step_type, work)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    return stepper


async def due_at(service, tenant, schedule_id, ms):
    """Set the schedule's next fire time (a gap while no process ran, or a tick about to come)."""
    async with service.storage.transaction() as tx:
        await tx.execute("set_schedule_status", tenant_id=tenant, schedule_id=schedule_id, status="active",
                         next_fire_at=ms, now=now_ms())


async def schedule_tasks(service, tenant, schedule_id):
    rows = (await service.list(tenant, rows=500))["rows"]
    return sorted((r for r in rows if r["schedule_id"] == schedule_id), key=lambda r: r["scheduled_for"])


def ms_of(iso_text):
    return int(datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp() * 1000)


async def the_schedule(service, tenant, schedule_id):
    return next(r for r in (await service.schedule_list(tenant, rows=500))["rows"] if r["id"] == schedule_id)


async def test_a_due_tick_is_found_by_the_executors_probe_and_runs(service, tenant, pipeline_id, step_type):
    async def work(tenant_id, task_id, step_name, input_data, config):
        return {"params": input_data["params"]}
    service.register_handler(step_type, work)
    await service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    created = await service.schedule_create(tenant, pipeline_id, "owner", every=60, params={"n": 1},
                                            title="report {date}", priority=7, timezone="Asia/Shanghai")
    assert created["status"] == "active" and created["every"] == 60 and created["runs"] == []
    tick = now_ms() - 1000
    await due_at(service, tenant, created["id"], tick)
    tasks = await until(lambda: schedule_tasks(service, tenant, created["id"]), what="the tick's task")
    task = await service.wait(tenant, tasks[0]["id"])
    assert task["status"] == "succeeded" and task["params"] == {"n": 1} and task["priority"] == 7
    assert ms_of(task["scheduled_for"]) == tick and task["schedule_id"] == created["id"]
    local = datetime.fromtimestamp(tick / 1000, tz=ZoneInfo("Asia/Shanghai"))
    assert task["title"] == f"report {local.date().isoformat()}"
    listed = await the_schedule(service, tenant, created["id"])
    assert listed["last_task_id"] == task["id"] and ms_of(listed["next_fire_at"]) == tick + MINUTE
    assert [(r["task_id"], r["status"]) for r in listed["runs"]] == [(task["id"], "succeeded")]


async def test_a_tick_fires_on_time_not_at_the_next_poll(make_service, database, tenant, pipeline_id, step_type):
    """Polling every 5 s, a tick 6 s ahead: the probe that sees it coming has the executor poll at it."""
    async def work(tenant_id, task_id, step_name, input_data, config):
        return {}
    service = make_service(database, poll_interval=5.0)
    service.register_handler(step_type, work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    at = datetime.fromtimestamp((now_ms() + 6000) / 1000, tz=timezone.utc)
    created = await service.schedule_create(tenant, pipeline_id, "owner", at=at)
    [task] = await until(lambda: schedule_tasks(service, tenant, created["id"]), timeout=15, what="the tick's task")
    late = ms_of(task["created_at"]) - ms_of(task["scheduled_for"])
    assert 0 <= late < 1000, f"the tick's task was created {late} ms after its tick"


@pytest.mark.parametrize("catch_up, fired", [("none", 0), ("once", 1), ("all", 6)])
async def test_catch_up_after_a_five_minute_gap(line, tenant, pipeline_id, catch_up, fired):
    """Six ticks of a per-minute schedule fell while no process ran, the latest 45 s ago (later
    than ON_TIME_MS: missed too)."""
    created = await line.schedule_create(tenant, pipeline_id, "owner", every=60, catch_up=catch_up)
    now = now_ms()
    first = now - 5 * MINUTE - 45_000
    assert now - (first + 5 * MINUTE) > ON_TIME_MS
    await due_at(line, tenant, created["id"], first)
    result = await line.schedules.fire_due(now)
    tasks = await schedule_tasks(line, tenant, created["id"])
    assert result.created == len(tasks) == fired
    expected = {"none": [], "once": [first + 5 * MINUTE], "all": [first + i * MINUTE for i in range(6)]}[catch_up]
    assert [ms_of(t["scheduled_for"]) for t in tasks] == expected
    assert ms_of((await the_schedule(line, tenant, created["id"]))["next_fire_at"]) == first + 6 * MINUTE
    assert (await line.schedules.fire_due(now)).created == 0  # nothing is due twice


async def test_a_tick_on_time_fires_whatever_catch_up_says(line, tenant, pipeline_id):
    created = await line.schedule_create(tenant, pipeline_id, "owner", cron="*/5 * * * *", catch_up="none")
    tick = ms_of(created["next_fire_at"])
    await line.schedules.fire_due(tick + ON_TIME_MS - 1)
    assert [ms_of(t["scheduled_for"]) for t in await schedule_tasks(line, tenant, created["id"])] == [tick]
    assert ms_of((await the_schedule(line, tenant, created["id"]))["next_fire_at"]) == tick + 5 * MINUTE


async def fire_twice(line, tenant, pipeline_id, overlap):
    """A tick whose task is left unfinished (no executor runs it), then the next tick."""
    created = await line.schedule_create(tenant, pipeline_id, "owner", every=60, overlap=overlap)
    first = ms_of(created["next_fire_at"])
    assert (await line.schedules.fire_due(first)).created == 1
    second = await line.schedules.fire_due(first + MINUTE)
    return created["id"], first, second


async def test_overlap_skip_creates_no_task_while_the_last_one_is_unfinished(line, tenant, pipeline_id):
    schedule_id, first, second = await fire_twice(line, tenant, pipeline_id, "skip")
    tasks = await schedule_tasks(line, tenant, schedule_id)
    assert second.created == 0 and [ms_of(t["scheduled_for"]) for t in tasks] == [first]
    await line.executor.run_once()  # the first task ends: the next tick fires again
    assert (await line.wait(tenant, tasks[0]["id"]))["status"] == "succeeded"
    assert (await line.schedules.fire_due(first + 2 * MINUTE)).created == 1


async def test_overlap_queue_fires_the_waiting_tick_when_the_last_task_ends(line, tenant, pipeline_id):
    schedule_id, first, second = await fire_twice(line, tenant, pipeline_id, "queue")
    assert second.created == 0
    waiting = await the_schedule(line, tenant, schedule_id)
    assert ms_of(waiting["queued_tick"]) == first + MINUTE
    assert (await line.schedules.fire_due(first + MINUTE + 5000)).created == 0  # still unfinished: it waits
    [task] = await schedule_tasks(line, tenant, schedule_id)
    await line.executor.run_once()
    assert (await line.wait(tenant, task["id"]))["status"] == "succeeded"
    # it fires once the last task has ended, though later than ON_TIME_MS after its time: it waited
    assert (await line.schedules.fire_due(first + MINUTE + 50_000)).created == 1
    tasks = await schedule_tasks(line, tenant, schedule_id)
    assert [ms_of(t["scheduled_for"]) for t in tasks] == [first, first + MINUTE]
    after = await the_schedule(line, tenant, schedule_id)
    assert after["queued_tick"] is None and ms_of(after["next_fire_at"]) == first + 2 * MINUTE


async def test_overlap_cancel_previous_cancels_the_last_task_in_the_ticks_commit(line, tenant, pipeline_id):
    schedule_id, first, second = await fire_twice(line, tenant, pipeline_id, "cancel_previous")
    assert second.created == 1
    old, new = await schedule_tasks(line, tenant, schedule_id)
    assert old["status"] == "cancelled" and new["status"] == "pending"
    assert ms_of(new["scheduled_for"]) == first + MINUTE


async def test_cancel_previous_with_catch_up_all_cancels_the_last_task_once_not_the_catch_up(
        line, tenant, pipeline_id):
    """Three ticks missed at once behind an unfinished task (catch_up all, cancel_previous): the
    pass cancels that task and gives each missed tick its task — it does not cancel the tasks
    it has just made for the earlier ticks of the same pass."""
    created = await line.schedule_create(tenant, pipeline_id, "owner", every=60, overlap="cancel_previous",
                                         catch_up="all")
    first = ms_of(created["next_fire_at"])
    assert (await line.schedules.fire_due(first)).created == 1
    fired = await line.schedules.fire_due(first + 3 * MINUTE)
    assert fired.created == 3
    tasks = await schedule_tasks(line, tenant, created["id"])
    assert [(ms_of(t["scheduled_for"]) - first, t["status"]) for t in tasks] == [
        (0, "cancelled"), (MINUTE, "pending"), (2 * MINUTE, "pending"), (3 * MINUTE, "pending")]


async def test_cancel_previous_cancels_the_last_tasks_delegated_children_too(stepper, tenant, pipeline_id, step_type):
    """The last task waits for a child task (a delegate step) that waits for a person: the tick
    that cancels it cancels the child in the same commit."""
    stepper.register_handler(step_type + "-delegate", delegate.run)
    stepper.register_handler(step_type + "-approval", approval.run)
    await stepper.define_pipeline(pipeline_id + "-child", [{"step_name": "ask", "step_type": step_type + "-approval"}])
    await stepper.define_pipeline(pipeline_id, [{"step_name": "sub", "step_type": step_type + "-delegate",
                                                 "config": {"pipeline_id": pipeline_id + "-child"}}])
    created = await stepper.schedule_create(tenant, pipeline_id, "owner", every=60, overlap="cancel_previous")
    first = ms_of(created["next_fire_at"])
    assert (await stepper.schedules.fire_due(first)).created == 1
    await stepper.executor.run_once()  # the delegate step waits; its child is submitted
    await stepper.executor.run_once()  # the child's approval waits
    [old] = await schedule_tasks(stepper, tenant, created["id"])
    [child] = [c["task_id"] for c in (await stepper.detail(tenant, old["id"]))["children"]]
    assert (await stepper.detail(tenant, child))["steps"][0]["status"] == "waiting"
    assert (await stepper.schedules.fire_due(first + MINUTE)).created == 1
    old_task, child_task = await stepper.detail(tenant, old["id"]), await stepper.detail(tenant, child)
    assert old_task["status"] == "cancelled" and child_task["status"] == "cancelled"
    assert child_task["steps"][0]["status"] == "cancelled"


async def test_cron_across_daylight_saving_time_in_berlin(line, tenant, pipeline_id):
    """02:30 daily: on 29 March 2026 02:30 does not exist in Berlin (it fires once, at 03:00);
    hourly: on 25 October 2026 02:00 happens twice (it fires at both instants)."""
    berlin = ZoneInfo("Europe/Berlin")

    def at(*args, fold=0):
        return int(datetime(*args, tzinfo=berlin, fold=fold).timestamp() * 1000)

    daily = await line.schedule_create(tenant, pipeline_id, "owner", cron="30 2 * * *", timezone="Europe/Berlin")
    await due_at(line, tenant, daily["id"], at(2026, 3, 28, 2, 30))
    for _ in range(3):  # each tick as it comes, its task run before the next (overlap skip)
        await line.schedules.fire_due(ms_of((await the_schedule(line, tenant, daily["id"]))["next_fire_at"]))
        await line.executor.run_once()
    local = [datetime.fromtimestamp(ms_of(t["scheduled_for"]) / 1000, tz=berlin).strftime("%m-%d %H:%M %Z")
             for t in await schedule_tasks(line, tenant, daily["id"])]
    assert local == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]
    hourly = await line.schedule_create(tenant, pipeline_id, "owner", cron="0 * * * *", timezone="Europe/Berlin",
                                        catch_up="all")
    await due_at(line, tenant, hourly["id"], at(2026, 10, 25, 1, 0))
    await line.schedules.fire_due(at(2026, 10, 25, 3, 0))
    ticks = [ms_of(t["scheduled_for"]) for t in await schedule_tasks(line, tenant, hourly["id"])]
    assert ticks == [at(2026, 10, 25, 1, 0), at(2026, 10, 25, 2, 0), at(2026, 10, 25, 2, 0, fold=1),
                     at(2026, 10, 25, 3, 0)]
    assert ticks[2] - ticks[1] == 60 * MINUTE  # the same wall-clock hour, an hour apart


async def test_pause_and_resume(line, tenant, pipeline_id):
    created = await line.schedule_create(tenant, pipeline_id, "owner", every=60, catch_up="all")
    past = now_ms() - 3 * MINUTE
    await due_at(line, tenant, created["id"], past)
    paused = await line.schedule_pause(tenant, created["id"])
    assert paused["status"] == "paused"
    assert (await line.schedule_pause(tenant, created["id"]))["status"] == "paused"  # again: a no-op
    assert (await line.schedules.fire_due(now_ms())).created == 0
    resumed = await line.schedule_resume(tenant, created["id"])
    # the ticks that fell while it was paused are not missed ticks: none fires, the next is after now
    assert resumed["status"] == "active" and ms_of(resumed["next_fire_at"]) > now_ms() - 1000
    assert (ms_of(resumed["next_fire_at"]) - past) % MINUTE == 0  # in step with its ticks
    assert (await line.schedules.fire_due(now_ms())).created == 0
    assert await schedule_tasks(line, tenant, created["id"]) == []


async def test_a_one_shot_fires_once_and_finishes(line, tenant, pipeline_id):
    at = datetime.now(timezone.utc).replace(microsecond=0).timestamp() + 3600
    created = await line.schedule_create(tenant, pipeline_id, "owner",
                                         at=datetime.fromtimestamp(at, tz=timezone.utc).isoformat())
    assert ms_of(created["next_fire_at"]) == at * 1000 == ms_of(created["at"])
    assert (await line.schedules.fire_due(int(at * 1000) + 10)).created == 1
    done = await the_schedule(line, tenant, created["id"])
    assert done["status"] == "finished" and done["next_fire_at"] is None
    assert (await line.schedules.fire_due(int(at * 1000) + MINUTE)).created == 0
    with pytest.raises(InvalidStateError, match="finished schedule cannot be paused"):
        await line.schedule_pause(tenant, created["id"])


async def test_run_now_delete_and_tenant_scope(line, tenant, pipeline_id):
    created = await line.schedule_create(tenant, pipeline_id, "owner", every=3600, params={"k": "v"})
    task = await line.schedule_run_now(tenant, created["id"])
    assert task["schedule_id"] == created["id"] and task["status"] == "pending"
    assert (await line.detail(tenant, task["id"]))["params"] == {"k": "v"}
    for operation in (line.schedule_pause, line.schedule_resume, line.schedule_delete, line.schedule_run_now):
        with pytest.raises(NotFoundError):
            await operation(tenant + "-other", created["id"])
    assert (await line.schedule_list(tenant + "-other"))["total"] == 0
    assert (await line.schedule_delete(tenant, created["id"])) == {"id": created["id"], "deleted": True}
    assert (await line.schedule_list(tenant))["total"] == 0
    assert (await line.detail(tenant, task["id"]))["schedule_id"] == created["id"]  # its tasks stay
    with pytest.raises(NotFoundError):
        await line.schedule_run_now(tenant, created["id"])


@pytest.mark.parametrize("arguments, message", [
    ({"cron": "* * * *"}, "cron must have 5 fields"),
    ({"cron": "*/5 * * * * *"}, "cron must have 5 fields"),  # seconds: above the once-a-minute floor
    ({"cron": "61 * * * *"}, "cannot be read"),
    ({"cron": "0 0 30 2 *"}, "cannot be read"),
    ({"every": 9}, "every must be a whole number from 10"),
    ({"every": 60, "cron": "* * * * *"}, "exactly one of cron, every and at"),
    ({}, "exactly one of cron, every and at"),
    ({"every": 60, "timezone": "Mars/Olympus"}, "IANA time zone"),
    ({"every": 60, "timezone": "../../etc/passwd"}, "IANA time zone"),
    ({"at": "2001-01-01T00:00"}, "at is in the past"),
    ({"at": "next tuesday"}, "ISO-8601"),
    ({"every": 60, "overlap": "wait"}, "overlap must be one of skip, queue, cancel_previous"),
    ({"every": 60, "catch_up": "some"}, "catch_up must be one of none, once, all"),
    ({"every": 60, "priority": 10}, "priority must be a whole number from 0 to 9"),
    ({"every": 60, "params": {"x": float("nan")}}, "params"),
    ({"every": 60, "title": "x" * 256}, "title must be at most 255"),
])
async def test_bad_input_is_a_clear_error_and_writes_nothing(line, tenant, pipeline_id, arguments, message):
    with pytest.raises(InvalidInputError, match=message):
        await line.schedule_create(tenant, pipeline_id, "owner", **arguments)
    assert (await line.schedule_list(tenant))["total"] == 0


async def test_an_unknown_pipeline_is_not_found_and_writes_nothing(line, tenant):
    with pytest.raises(NotFoundError, match="pipeline 'no-such' does not exist"):
        await line.schedule_create(tenant, "no-such", "owner", every=60)
    assert (await line.schedule_list(tenant))["total"] == 0


async def test_a_tick_of_a_deleted_pipeline_passes_and_holds_up_no_other(line, tenant, pipeline_id, step_type):
    gone = pipeline_id + "-gone"
    await line.define_pipeline(gone, [{"step_name": "only", "step_type": step_type}])
    orphan = await line.schedule_create(tenant, gone, "owner", every=60)
    kept = await line.schedule_create(tenant, pipeline_id, "owner", every=60)
    async with line.storage.transaction() as tx:  # pipeline_core deletes the pipeline
        await tx.execute("delete_pipeline_steps", pipeline_id=gone)
        await tx.execute("delete_pipeline", pipeline_id=gone)
    tick = now_ms() - 1000
    for schedule in (orphan, kept):
        await due_at(line, tenant, schedule["id"], tick)
    fresh = PipelineService(line.storage, autostart=False, require_handlers=False)  # no cached definition
    assert (await fresh.schedules.fire_due(tick + 2000)).created == 1
    assert await schedule_tasks(line, tenant, orphan["id"]) == []
    assert [ms_of(t["scheduled_for"]) for t in await schedule_tasks(line, tenant, kept["id"])] == [tick]
    assert ms_of((await the_schedule(line, tenant, orphan["id"]))["next_fire_at"]) == tick + MINUTE
