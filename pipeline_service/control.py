"""Human control of a task: pause, resume, cancel, and modify with a cascade re-run.

Each operation locks the task's step rows (like every state change), checks the
transition against the tables in ``state.py`` and writes in one transaction.
Mixed into ``Manager``, whose shared helpers (``_lock_states``, ``_advance``) it uses.
"""
from . import state
from .artifacts import Writes
from .exceptions import InvalidStateError, NotFoundError
from .ids import now_ms
from .views import task_summary


class ControlOperations:
    async def _control(self, tenant_id, task_id, change):
        """Run ``change(writes, states, task_status)`` with the task's step rows locked;
        returns (its result, the task summary after it)."""
        async def run(tx):
            key = (tenant_id, task_id)
            states, task_status = (await self._lock_states(tx, [key])).get(key, ({}, None))
            if task_status is None:
                raise NotFoundError(f"task {task_id!r} does not exist")
            writes = Writes(self, tx, now_ms())
            result = await change(writes, states, task_status)
            writes.flush()
            return result, task_summary(await tx.fetch_one("get_task", tenant_id=tenant_id, task_id=task_id))
        return await self.storage.atomic(run)

    async def pause(self, tenant_id, task_id):
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            if status == "paused":
                return None  # already holds: a no-op
            state.check_transition(state.TASK_TRANSITIONS, "task", status, "paused")
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status="paused",
                     error=None, finished_at=None, now=now, from_status=status)
            tx.defer("hold_ready_steps", tenant_id=tenant_id, task_id=task_id, now=now)
        return (await self._control(tenant_id, task_id, change))[1]

    async def resume(self, tenant_id, task_id):
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            if status in ("running", "pending"):
                return None  # already holds
            state.check_transition(state.TASK_TRANSITIONS, "task", status, "running")
            if status != "paused":
                raise InvalidStateError(f"task {task_id!r} is {status}: only a paused task can be resumed")
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status="running",
                     error=None, finished_at=None, now=now, from_status="paused")
            await self._advance(writes, tenant_id, task_id, states, None)
        return (await self._control(tenant_id, task_id, change))[1]

    async def cancel(self, tenant_id, task_id):
        """Cancel the task; returns (summary, ids of the steps that were running)."""
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            if status == "cancelled":
                return []
            state.check_transition(state.TASK_TRANSITIONS, "task", status, "cancelled")
            running = [s["id"] for s in states.values() if s["status"] == "running"]
            tx.defer("cancel_unfinished_steps", tenant_id=tenant_id, task_id=task_id, now=now)
            tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status="cancelled",
                     error=None, finished_at=now, now=now, from_status=status)
            self.forget(tenant_id, task_id)
            return running
        running, summary = await self._control(tenant_id, task_id, change)
        return summary, running

    async def modify(self, tenant_id, task_id, updates, rerun_from):
        """Apply human edits as new artifact versions and re-run the affected steps.

        Returns (summary with ``rerun``, ids of affected steps that were running).
        """
        async def change(writes, states, status):
            tx, now = writes.tx, writes.now
            if status == "cancelled":
                raise InvalidStateError(f"task {task_id!r} is cancelled: a cancelled task cannot be modified")
            plan = await self.plan(tx, tenant_id, task_id)
            cascade = state.cascade_plan(plan.dag, updates, rerun_from)
            interrupted = [states[n]["id"] for n in cascade.interrupted if states[n]["status"] == "running"]
            for name in cascade.edited_outputs:
                version = (states[name]["output_version"] or 0) + 1
                writes.artifact(tenant_id, task_id, name, "output", version, updates[name]["output"], "manual",
                                {"input_version": states[name]["input_version"]})
                tx.defer("set_manual_output", tenant_id=tenant_id, task_id=task_id, step_name=name,
                         output_version=version, now=now)
                states[name].update(status="succeeded", output_version=version, ready_at=None)
            for name in cascade.rerun:
                tx.defer("reset_step", tenant_id=tenant_id, task_id=task_id, step_name=name,
                         input_stale=0 if name in cascade.edited_inputs else 1, now=now)
                states[name].update(status="pending", ready_at=None, input_stale=name not in cascade.edited_inputs)
            for name in cascade.edited_inputs:
                version = (states[name]["input_version"] or 0) + 1
                lineage = {d: states[d]["output_version"] for d in plan.dag.steps[name].depends_on}
                writes.artifact(tenant_id, task_id, name, "input", version, updates[name]["input"], "manual",
                                lineage)
                tx.defer("set_manual_input", tenant_id=tenant_id, task_id=task_id, step_name=name,
                         input_version=version, now=now)
                states[name].update(input_version=version, input_stale=0)
            if status in ("succeeded", "failed"):
                tx.defer("set_task_status", tenant_id=tenant_id, task_id=task_id, status="running",
                         error=None, finished_at=None, now=now, from_status=status)
                status = "running"
            if status == "running":
                await self._advance(writes, tenant_id, task_id, states, None)
            return cascade.rerun, interrupted
        (rerun, interrupted), summary = await self._control(tenant_id, task_id, change)
        summary["rerun"] = list(rerun)
        return summary, interrupted
