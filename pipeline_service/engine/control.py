"""Human control of a task: pause, resume, cancel, and modify with a cascade re-run.

Each operation locks the task's row, then its step rows (like every state change, see
``progress.Progress.lock_states``), has the transition decided by
``status.task_transition`` and writes in one transaction.
"""
from dataclasses import dataclass

from ..dag import cascade_plan
from ..exceptions import NotFoundError
from ..ids import now_ms
from ..status import ACTIVE_TASK_STATUSES, CANCELLABLE_STEPS, StepStatus, TaskAction, step_transition, task_transition
from ..views import task_summary
from .events import Events
from .plans import Plans
from .progress import Progress
from .writes import Writes


def claim_to_stop(step):
    """The claim token ``(step id, attempt)`` whose handler a control change must stop, or None.

    Running: its current claim.  Ready: perhaps being claimed right now (the states are
    read without locking the step rows), and that claim will be the next attempt.  A
    claim made after the change commits has a later attempt and is left alone."""
    if step["status"] == StepStatus.RUNNING:
        return step["id"], int(step["attempt"])
    if step["status"] == StepStatus.PENDING and step["ready_at"] is not None:
        return step["id"], int(step["attempt"]) + 1
    return None


def claims_to_stop(steps):
    return [claim for claim in map(claim_to_stop, steps) if claim is not None]


@dataclass
class LockedTask:
    """A task whose row and step rows this transaction holds: what a control change works on."""

    tenant_id: str
    task_id: str
    status: str        # the task's status as last committed
    states: dict       # step name -> its row (changed in place as the change decides)
    writes: Writes

    @property
    def tx(self):
        return self.writes.tx

    @property
    def now(self) -> int:
        return self.writes.now


@dataclass(frozen=True)
class ControlResult:
    """What a cancel or a modify did: the task summary, and the claims (step id, attempt)
    whose handlers must be stopped (see claim_to_stop)."""

    summary: dict
    stop: list


class Control:
    def __init__(self, storage, plans: Plans, progress: Progress, events: Events) -> None:
        self.storage = storage
        self.plans = plans
        self.progress = progress
        self.events = events  # task.paused, task.resumed, task.cancelled, task.modified: at commit

    async def _control(self, tenant_id, task_id, change):
        """Run ``change(locked_task)`` in one transaction with the task's row and step rows
        locked; returns (its result, the task summary after it)."""
        return await self.storage.atomic(lambda tx: self._locked_change(tx, tenant_id, task_id, change))

    async def _locked_change(self, tx, tenant_id, task_id, change):
        key = (tenant_id, task_id)
        states, task_status = (await self.progress.lock_states(tx, {key: None})).get(key, ({}, None))
        if task_status is None:
            raise NotFoundError(f"task {task_id!r} does not exist")
        writes = self.progress.writes(tx, now_ms())
        result = await change(LockedTask(tenant_id, task_id, task_status, states, writes))
        writes.flush()
        return result, task_summary(await tx.fetch_one("get_task", tenant_id=tenant_id, task_id=task_id))

    async def pause(self, tenant_id, task_id):
        return (await self._control(tenant_id, task_id, self._pause))[1]

    async def _pause(self, t: LockedTask):
        new = task_transition(t.status, TaskAction.PAUSE, t.task_id)
        if new == t.status:
            return  # already holds: a no-op
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=None, now=t.now, from_status=t.status)
        t.tx.defer("hold_ready_steps", tenant_id=t.tenant_id, now=t.now, ids=[
            s["id"] for s in t.states.values() if s["status"] == StepStatus.PENDING and s["ready_at"] is not None])
        self.events.at_commit(t.tx, "task.paused", t.tenant_id, t.task_id)

    async def resume(self, tenant_id, task_id):
        return (await self._control(tenant_id, task_id, self._resume))[1]

    async def _resume(self, t: LockedTask):
        new = task_transition(t.status, TaskAction.RESUME, t.task_id)
        if new == t.status:
            return  # already holds
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=None, now=t.now, from_status=t.status)
        self.events.at_commit(t.tx, "task.resumed", t.tenant_id, t.task_id)  # before the task's end, if it ends now
        await self.progress.go_on(t.writes, t.tenant_id, t.task_id, t.states, new)

    async def cancel(self, tenant_id, task_id) -> ControlResult:
        """Cancel the task: every unfinished step is cancelled, the task ends cancelled."""
        stop, summary = await self._control(tenant_id, task_id, self._cancel)
        return ControlResult(summary, stop)

    async def cancel_within(self, tx, tenant_id, task_id) -> ControlResult:
        """Cancel the task in the caller's transaction: a schedule's tick with overlap
        cancel_previous cancels the last task and creates its own in one commit (the
        schedule's row is locked before the task's, never after)."""
        stop, summary = await self._locked_change(tx, tenant_id, task_id, self._cancel)
        return ControlResult(summary, stop)

    async def _cancel(self, t: LockedTask):
        new = task_transition(t.status, TaskAction.CANCEL, t.task_id)
        if new == t.status:
            return []
        stop = claims_to_stop(t.states.values())
        t.tx.defer("cancel_unfinished_steps", tenant_id=t.tenant_id, now=t.now, ids=[
            s["id"] for s in t.states.values() if s["status"] in CANCELLABLE_STEPS])
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=t.now, now=t.now, from_status=t.status)
        self.plans.forget_at_commit(t.tx, t.tenant_id, t.task_id)
        self.events.at_commit(t.tx, "task.cancelled", t.tenant_id, t.task_id)
        return stop

    async def modify(self, tenant_id, task_id, updates, rerun_from) -> ControlResult:
        """Apply human edits as new artifact versions and re-run the affected steps; the
        summary carries ``rerun``, the steps re-run."""
        (rerun, stop), summary = await self._control(
            tenant_id, task_id, lambda t: self._modify(t, updates, rerun_from))
        summary["rerun"] = list(rerun)
        return ControlResult(summary, stop)

    async def _modify(self, t: LockedTask, updates, rerun_from):
        tx, now, states, tenant_id, task_id = t.tx, t.now, t.states, t.tenant_id, t.task_id
        status = t.status
        new = task_transition(status, TaskAction.MODIFY, task_id)
        plan = await self.plans.get(tx, tenant_id, task_id)
        cascade = cascade_plan(plan.dag, updates, rerun_from)
        stop = claims_to_stop(states[n] for n in cascade.interrupted)
        for name in cascade.edited_outputs:
            version = (states[name]["output_version"] or 0) + 1
            t.writes.artifact(tenant_id, task_id, name, "output", version, updates[name]["output"], "manual",
                              {"input_version": states[name]["input_version"]})
            tx.defer("set_manual_output", id=states[name]["id"], tenant_id=tenant_id, output_version=version,
                     now=now)
            states[name].update(status=step_transition(states[name]["status"], StepStatus.SUCCEEDED),
                                output_version=version, ready_at=None)
        edited_inputs = set(cascade.edited_inputs)
        for stale in (0, 1):  # an edited input is used as is; every other re-run input is rebuilt
            names = [n for n in cascade.rerun if (n not in edited_inputs) == stale]
            tx.defer("reset_steps", ids=[states[n]["id"] for n in names], tenant_id=tenant_id,
                     input_stale=stale, now=now)
            for name in names:
                states[name].update(status=step_transition(states[name]["status"], StepStatus.PENDING),
                                    ready_at=None, input_stale=stale)
        for name in cascade.edited_inputs:
            version = (states[name]["input_version"] or 0) + 1
            lineage = {d: states[d]["output_version"] for d in plan.dag.steps[name].depends_on}
            t.writes.artifact(tenant_id, task_id, name, "input", version, updates[name]["input"], "manual",
                              lineage)
            tx.defer("set_manual_input", id=states[name]["id"], tenant_id=tenant_id, input_version=version,
                     now=now)
            states[name].update(input_version=version, input_stale=0)
        if cascade.edited_outputs:  # a task not started yet starts with an edited output: a person did a step
            new = task_transition(new, TaskAction.START, task_id)
        if new != status:
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status=new,
                     error=None, finished_at=None, now=now, from_status=status)
            status = new
        self.events.at_commit(tx, "task.modified", tenant_id, task_id, rerun=list(cascade.rerun))
        if status in ACTIVE_TASK_STATUSES:  # pending: its reset roots are made ready again
            await self.progress.go_on(t.writes, tenant_id, task_id, states, status)
        return cascade.rerun, stop
