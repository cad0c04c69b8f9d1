"""Human control of a task: pause, resume, cancel, and modify with a cascade re-run.

Each operation locks the task's row, then its step rows (like every state change, see
``progress.Progress.lock_states``), has the transition decided by
``status.task_transition`` and writes in one transaction.
"""
from ..dag import cascade_plan
from ..exceptions import NotFoundError
from ..ids import now_ms
from ..status import ACTIVE_TASK_STATUSES, CANCELLABLE_STEPS, StepStatus, TaskAction, step_transition, task_transition
from ..views import task_summary
from .events import Events
from .plans import Plans
from .progress import Progress


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


class Control:
    def __init__(self, storage, plans: Plans, progress: Progress, events: Events) -> None:
        self.storage = storage
        self.plans = plans
        self.progress = progress
        self.events = events  # task.paused, task.resumed, task.cancelled, task.modified: at commit

    async def _control(self, tenant_id, task_id, change):
        """Run ``change(writes, states, task_status)`` with the task's row and step rows locked;
        returns (its result, the task summary after it)."""
        return await self.storage.atomic(lambda tx: self._locked_change(tx, tenant_id, task_id, change))

    async def _locked_change(self, tx, tenant_id, task_id, change):
        key = (tenant_id, task_id)
        states, task_status = (await self.progress.lock_states(tx, {key: None})).get(key, ({}, None))
        if task_status is None:
            raise NotFoundError(f"task {task_id!r} does not exist")
        writes = self.progress.writes(tx, now_ms())
        result = await change(writes, states, task_status)
        writes.flush()
        return result, task_summary(await tx.fetch_one("get_task", tenant_id=tenant_id, task_id=task_id))

    async def pause(self, tenant_id, task_id):
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            new = task_transition(status, TaskAction.PAUSE, task_id)
            if new == status:
                return None  # already holds: a no-op
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status=new,
                     error=None, finished_at=None, now=now, from_status=status)
            tx.defer("hold_ready_steps", tenant_id=tenant_id, now=now, ids=[
                s["id"] for s in states.values() if s["status"] == StepStatus.PENDING and s["ready_at"] is not None])
            self.events.at_commit(tx, "task.paused", tenant_id, task_id)
        return (await self._control(tenant_id, task_id, change))[1]

    async def resume(self, tenant_id, task_id):
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            new = task_transition(status, TaskAction.RESUME, task_id)
            if new == status:
                return None  # already holds
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status=new,
                     error=None, finished_at=None, now=now, from_status=status)
            self.events.at_commit(tx, "task.resumed", tenant_id, task_id)  # before the task's end, if it ends now
            await self.progress.go_on(writes, tenant_id, task_id, states, new)
        return (await self._control(tenant_id, task_id, change))[1]

    async def cancel(self, tenant_id, task_id):
        """Cancel the task; returns (summary, the claims to stop: see claim_to_stop)."""
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            new = task_transition(status, TaskAction.CANCEL, task_id)
            if new == status:
                return []
            running = claims_to_stop(states.values())
            tx.defer("cancel_unfinished_steps", tenant_id=tenant_id, now=now, ids=[
                s["id"] for s in states.values() if s["status"] in CANCELLABLE_STEPS])
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status=new,
                     error=None, finished_at=now, now=now, from_status=status)
            self.plans.forget_at_commit(tx, tenant_id, task_id)
            self.events.at_commit(tx, "task.cancelled", tenant_id, task_id)
            return running
        running, summary = await self._control(tenant_id, task_id, change)
        return summary, running

    async def modify(self, tenant_id, task_id, updates, rerun_from):
        """Apply human edits as new artifact versions and re-run the affected steps.

        Returns (summary with ``rerun``, the claims of affected steps to stop: see claim_to_stop).
        """
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            new = task_transition(status, TaskAction.MODIFY, task_id)
            plan = await self.plans.get(tx, tenant_id, task_id)
            cascade = cascade_plan(plan.dag, updates, rerun_from)
            interrupted = claims_to_stop(states[n] for n in cascade.interrupted)
            for name in cascade.edited_outputs:
                version = (states[name]["output_version"] or 0) + 1
                writes.artifact(tenant_id, task_id, name, "output", version, updates[name]["output"], "manual",
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
                writes.artifact(tenant_id, task_id, name, "input", version, updates[name]["input"], "manual",
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
                await self.progress.go_on(writes, tenant_id, task_id, states, status)
            return cascade.rerun, interrupted
        (rerun, interrupted), summary = await self._control(tenant_id, task_id, change)
        summary["rerun"] = list(rerun)
        return summary, interrupted
