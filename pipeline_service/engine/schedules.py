"""Schedules: a pipeline submitted again and again (cron, every N seconds, once at a time).

Exactly one task per tick, across any number of processes: a tick creates its task in the
same transaction that advances its schedule (the schedule's row locked, ``SKIP LOCKED`` so
processes share the due ones), and the unique key (tenant_id, schedule_id, scheduled_for)
of ``pipeline_tasks`` is the last guard.  A crash before the commit leaves the schedule due
and no task: the next poll of any process fires the tick.  Ticks are found by the
executor's probe (``next_tick``): no query of their own while nothing is due.

Which due ticks fire (catch_up) and when the next falls are computed by ``ticks`` (pure);
what a tick does while the schedule's last task is unfinished is its overlap policy.
"""
import logging
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import DuplicateKeyError, InvalidInputError, NotFoundError
from ..ids import new_id, now_ms
from ..json_objects import from_json, to_json
from ..status import TERMINAL_TASK_STATUSES, ScheduleAction, ScheduleStatus, schedule_transition
from ..ticks import Overlap, Timing, plan_ticks, render_title
from ..views import schedule_view, task_summary
from .control import Control
from .records import NewTask
from .tasks import Tasks

log = logging.getLogger(__name__)
FIRE_BATCH = 100        # due schedules one tick transaction fires at most (the executor runs them all)
RUNS_SHOWN = 5          # a schedule's last runs in its list entry
QUEUE_RECHECK_MS = 1000  # overlap queue: how often a waiting tick looks whether the last task ended


@dataclass(frozen=True)
class ScheduleSpec:
    """A new schedule's checked arguments (service.schedule_create checks them)."""

    tenant_id: str
    pipeline_id: str
    owner_id: str
    title: str
    params: dict[str, Any]
    timing: Timing
    overlap: str
    catch_up: str
    priority: int


@dataclass
class Fired:
    """What firing due ticks did: tasks created, and the claims (step id, attempt) of the tasks
    cancel_previous cancelled, whose handlers must be stopped."""

    created: int = 0
    stop: list = field(default_factory=list)
    schedules: int = 0  # due schedules looked at


def timing_of(row) -> Timing:
    return Timing(row["cron"], row["every_seconds"], row["at_time"], row["timezone"])


class Schedules:
    def __init__(self, storage, tasks: Tasks, control: Control) -> None:
        self.storage = storage
        self.tasks = tasks        # a tick's task is written in the tick's transaction
        self.control = control    # cancel_previous cancels in that same transaction

    # ---- people's operations --------------------------------------------------------
    async def create(self, spec: ScheduleSpec) -> dict[str, Any]:
        now = now_ms()
        first = spec.timing.first_after(now)
        if first is None:
            raise InvalidInputError("at is in the past: a one-shot schedule must fire later than now")
        row = dict(id=new_id(), tenant_id=spec.tenant_id, pipeline_id=spec.pipeline_id, owner_id=spec.owner_id,
                   title=spec.title, params=to_json(spec.params), cron=spec.timing.cron,
                   every_seconds=spec.timing.every_seconds, at_time=spec.timing.at_ms,
                   timezone=spec.timing.timezone, overlap=spec.overlap, catch_up=spec.catch_up,
                   priority=spec.priority, status=ScheduleStatus.ACTIVE, next_fire_at=first, now=now)
        await self.storage.atomic(lambda tx: self._insert(tx, row))
        return schedule_view(dict(row, last_task_id=None, last_fired_at=None, queued_tick=None, created_at=now,
                                  updated_at=now))

    async def _insert(self, tx, row):
        await self.tasks.definition(tx, row["pipeline_id"])  # NotFoundError: nothing is written
        tx.defer("insert_schedule", **row)

    async def list(self, tenant_id, page, rows) -> dict[str, Any]:
        return await self.storage.atomic(lambda tx: self._list(tx, tenant_id, page, rows))

    async def _list(self, tx, tenant_id, page, rows):
        total = (await tx.fetch_one("count_schedules", tenant_id=tenant_id))["n"]
        found = await tx.fetch_all("list_schedules", tenant_id=tenant_id, limit=rows, offset=(page - 1) * rows)
        runs = await tx.fetch_union("schedule_runs", [
            dict(tenant_id=tenant_id, schedule_id=r["id"], limit=RUNS_SHOWN) for r in found])
        by_schedule: dict[str, list] = {}
        for run in runs:
            by_schedule.setdefault(run["schedule_id"], []).append(run)
        return {"total": int(total), "rows": [schedule_view(r, sorted(
            by_schedule.get(r["id"], []), key=lambda x: x["scheduled_for"] or 0, reverse=True)) for r in found]}

    async def pause(self, tenant_id, schedule_id) -> dict[str, Any]:
        return await self._change(tenant_id, schedule_id, ScheduleAction.PAUSE)

    async def resume(self, tenant_id, schedule_id) -> dict[str, Any]:
        return await self._change(tenant_id, schedule_id, ScheduleAction.RESUME)

    async def _change(self, tenant_id, schedule_id, action):
        return await self.storage.atomic(lambda tx: self._locked_change(tx, tenant_id, schedule_id, action))

    async def _locked_change(self, tx, tenant_id, schedule_id, action):
        row = await self._lock(tx, tenant_id, schedule_id)
        new = schedule_transition(row["status"], action, schedule_id)
        if new != row["status"]:
            now = now_ms()
            next_fire = row["next_fire_at"]
            if action is ScheduleAction.RESUME:
                # ticks that fell while paused are not missed ticks: the next one after now (a
                # one-shot keeps its time; if it has passed, catch_up decides at once)
                timing = timing_of(row)
                next_fire = timing.at_ms if timing.at_ms is not None else timing.first_after(
                    now, anchor=row["next_fire_at"])
            tx.defer("set_schedule_status", tenant_id=tenant_id, schedule_id=schedule_id, status=new,
                     next_fire_at=next_fire, now=now)
            row = dict(row, status=new, next_fire_at=next_fire, queued_tick=None, updated_at=now)
        return schedule_view(row)

    async def delete(self, tenant_id, schedule_id) -> dict[str, Any]:
        """Delete the schedule (its tasks stay, and keep its id)."""
        await self.storage.atomic(lambda tx: self._delete(tx, tenant_id, schedule_id))
        return {"id": schedule_id, "deleted": True}

    async def _delete(self, tx, tenant_id, schedule_id):
        await self._lock(tx, tenant_id, schedule_id)  # waits for a tick firing it now
        tx.defer("delete_schedule", tenant_id=tenant_id, schedule_id=schedule_id)

    async def run_now(self, tenant_id, schedule_id) -> dict[str, Any]:
        """A task of the schedule now, besides its ticks (whatever its status and overlap: a
        person asked for it); it counts as the schedule's last task."""
        return await self.storage.atomic(lambda tx: self._run_now(tx, tenant_id, schedule_id))

    async def _run_now(self, tx, tenant_id, schedule_id):
        row = await self._lock(tx, tenant_id, schedule_id)
        # its own place in the tick key: never the time of a tick that already has a task
        # (a tick due at this very millisecond finds this task as its own: see _tick)
        tick = max(now_ms(), (row["last_fired_at"] or 0) + 1)
        summary = await self.tasks.write_task(tx, self._new_task(row, tick), require_handlers=False)
        tx.defer("advance_schedule", id=row["id"], tenant_id=tenant_id, status=row["status"],
                 next_fire_at=row["next_fire_at"], last_task_id=summary["id"], last_fired_at=tick,
                 queued_tick=row["queued_tick"], now=now_ms())
        return task_summary(summary)

    @staticmethod
    async def _lock(tx, tenant_id, schedule_id):
        return await tx.fetch_existing("lock_schedule", f"schedule {schedule_id!r}", tenant_id=tenant_id,
                                       schedule_id=schedule_id)

    def _new_task(self, row, tick):
        return NewTask(row["tenant_id"], row["pipeline_id"], row["owner_id"],
                       render_title(row["title"] or "", tick, row["timezone"]), from_json(row["params"]) or {},
                       int(row["priority"]), schedule_id=row["id"], scheduled_for=tick)

    async def _runnable(self, tx, row):
        """Can a task of the schedule's pipeline be written?  (Read before any write of the tick:
        a pipeline deleted or broken since the schedule was made must not hold up the others.)"""
        try:
            await self.tasks.definition(tx, row["pipeline_id"])
        except (NotFoundError, InvalidInputError) as exc:
            log.warning("pipeline schedule %s (tenant %s): its tick makes no task: %s", row["id"], row["tenant_id"],
                        exc)
            return False
        return True

    # ---- the executor's tick ----------------------------------------------------------
    async def fire_due(self, now: int | None = None) -> Fired:
        """Fire every due tick (in transactions of FIRE_BATCH schedules): what it did."""
        fired = Fired()
        while True:
            at = now_ms() if now is None else now
            try:
                batch = await self.storage.atomic(lambda tx: self._fire(tx, at, careful=False))
            except DuplicateKeyError:  # a run_now took a tick's millisecond: look before each write
                batch = await self.storage.atomic(lambda tx: self._fire(tx, at, careful=True))
            fired.created += batch.created
            fired.stop += batch.stop
            fired.schedules += batch.schedules
            if batch.schedules < FIRE_BATCH:
                return fired

    async def _fire(self, tx, now, careful):
        rows = await tx.fetch_all("due_schedules", now=now, limit=FIRE_BATCH)
        last = [r for r in rows if r["last_task_id"] is not None]
        statuses = {r["id"]: r["status"] for r in await tx.fetch_all(
            "tasks_status", task_ids=sorted({r["last_task_id"] for r in last}),
            tenant_ids=sorted({r["tenant_id"] for r in last}))} if last else {}
        fired = Fired(schedules=len(rows))
        for row in rows:
            status = statuses.get(row["last_task_id"])
            await self._tick(tx, row, now, status is not None and status not in TERMINAL_TASK_STATUSES, fired,
                             careful)
        return fired

    async def _tick(self, tx, row, now, unfinished, fired, careful):
        """Fire the due ticks of one locked schedule and advance it, in ``tx``."""
        timing = timing_of(row)
        queued = row["queued_tick"]
        if queued is not None:  # overlap queue: a tick waits for the last task to end
            if unfinished:
                tx.defer("advance_schedule", id=row["id"], tenant_id=row["tenant_id"], status=row["status"],
                         next_fire_at=now + QUEUE_RECHECK_MS, last_task_id=row["last_task_id"],
                         last_fired_at=row["last_fired_at"], queued_tick=queued, now=now)
                return
            # it waited (it was not missed): it fires now; the ticks after it follow catch_up
            ticks, next_fire = [queued], timing.first_after(queued, anchor=queued)
            if next_fire is not None and next_fire <= now:
                plan = plan_ticks(timing, next_fire, now, row["catch_up"])
                ticks, next_fire = ticks + plan.fire, plan.next_fire_at
        else:
            plan = plan_ticks(timing, row["next_fire_at"], now, row["catch_up"])
            ticks, next_fire = plan.fire, plan.next_fire_at
        last_task, last_fired, queued = row["last_task_id"], row["last_fired_at"], None
        if ticks and not await self._runnable(tx, row):
            ticks = []  # its pipeline is gone or broken: the ticks pass without a task (logged)
        for tick in ticks:
            if tick == row["last_fired_at"] or (careful and await tx.fetch_one(
                    "task_for_tick", tenant_id=row["tenant_id"], schedule_id=row["id"], scheduled_for=tick)):
                continue  # a run_now took this very millisecond: that task is this tick's
            if unfinished and row["overlap"] == Overlap.SKIP:
                continue
            if unfinished and row["overlap"] == Overlap.QUEUE:
                queued, next_fire = tick, now + QUEUE_RECHECK_MS  # later ticks: catch_up, once it fires
                break
            if unfinished and row["overlap"] == Overlap.CANCEL_PREVIOUS:
                fired.stop += (await self.control.cancel_within(tx, row["tenant_id"], last_task)).stop
                unfinished = False
            # overlap looks at the task unfinished before this pass only: the ticks one pass
            # fires (catch_up all) are the catch-up asked for, each gets its task
            summary = await self.tasks.write_task(tx, self._new_task(row, tick), require_handlers=False)
            last_task, last_fired = summary["id"], tick
            fired.created += 1
        status = row["status"]
        if next_fire is None:  # a one-shot's tick has come
            status = schedule_transition(status, ScheduleAction.FINISH, row["id"])
        tx.defer("advance_schedule", id=row["id"], tenant_id=row["tenant_id"], status=status,
                 next_fire_at=next_fire, last_task_id=last_task, last_fired_at=last_fired, queued_tick=queued,
                 now=now)
