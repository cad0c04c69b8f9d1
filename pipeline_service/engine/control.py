"""Human control of a task: pause, resume, cancel, modify with a cascade re-run, and the signal
that wakes a waiting step.

Each operation locks the task's row, then its step rows (like every state change, see
``progress.Progress.lock_states``), has the transition decided by
``status.task_transition`` and writes in one transaction.  Pause, resume, cancel and modify
reach the child tasks of delegate steps (and theirs) in that same transaction: the task is
locked together with its unfinished descendants (one ``lock_tasks``, in id order, like any
set of tasks), so no crash can leave a cancelled parent's child running (docs/SEMANTICS.md,
"Waiting steps").
"""
from dataclasses import dataclass, field

from ..dag import cascade_plan
from ..exceptions import InvalidInputError, InvalidStateError, NotFoundError
from ..ids import now_ms
from ..json_objects import from_json
from ..status import (ACTIVE_TASK_STATUSES, CANCELLABLE_STEPS, TERMINAL_TASK_STATUSES, StepStatus, TaskAction,
                      TaskStatus, step_transition, task_transition)
from ..views import task_summary
from .events import Events
from .preparing import edited
from .plans import Plans
from .progress import Progress, blocked_skips
from .waiting import MAX_DELEGATION_DEPTH, wake
from .writes import Writes

WAITS_FOR = {"timer": "its time", "task": "its child task", "signal": "a signal"}


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
class Changed:
    """What a change did to one locked task: the claims whose handlers must be stopped, and the
    child tasks (of its delegate steps) the change reaches next, in the same transaction."""

    stop: list = field(default_factory=list)
    children: list = field(default_factory=list)


@dataclass(frozen=True)
class Modified(Changed):
    """A modify's change: also the steps it re-runs."""

    rerun: tuple = ()


@dataclass(frozen=True)
class ControlResult:
    """What a control change did: the task summary, and the claims (step id, attempt) whose handlers
    must be stopped (see claim_to_stop) — its own and those of the child tasks it reached."""

    summary: dict
    stop: list = field(default_factory=list)


class Control:
    def __init__(self, storage, plans: Plans, progress: Progress, events: Events) -> None:
        self.storage = storage
        self.plans = plans
        self.progress = progress
        self.events = events  # task.paused, task.resumed, task.cancelled, task.modified: at commit

    async def _control(self, tenant_id, task_id, change, reach=None):
        """Run ``change(locked_task)`` in one transaction with the task's row and step rows
        locked (and, with ``reach``, its unfinished descendants': see _locked_change); returns
        (its result, the task summary after it)."""
        return await self.storage.atomic(lambda tx: self._locked_change(tx, tenant_id, task_id, change, reach))

    async def _locked_change(self, tx, tenant_id, task_id, change, reach=None):
        """``change`` done to the task, then ``reach`` (a change returning ``Changed``) to each child
        task that a change names in its ``Changed.children``, and so on down — all in ``tx``."""
        locked = await self._lock_family(tx, tenant_id, task_id, reach is not None)
        if (tenant_id, task_id) not in locked:
            raise NotFoundError(f"task {task_id!r} does not exist")
        writes = self.progress.writes(tx, now_ms())

        def task(tid):
            states, status = locked[(tenant_id, tid)]
            return LockedTask(tenant_id, tid, status, states, writes)
        result = await change(task(task_id))
        stop, children = (list(result.stop), list(result.children)) if isinstance(result, Changed) else ([], [])
        while children:  # locked with the task: a child submitted since then waits for this commit
            child = children.pop(0)
            if (tenant_id, child) not in locked:  # a task without steps: it ended as it was submitted
                continue
            changed = await reach(task(child))
            stop += changed.stop
            children += changed.children
        writes.flush()
        summary = task_summary(await tx.fetch_one("get_task", tenant_id=tenant_id, task_id=task_id))
        return (result, stop), summary

    async def _lock_family(self, tx, tenant_id, task_id, descendants):
        """Lock the task (and, if ``descendants``, its unfinished descendants: the child tasks of its
        delegate steps and theirs, MAX_DELEGATION_DEPTH levels at most) with their step rows:
        {(tenant_id, task_id): (states, status)}.  The descendants are read first without a lock,
        so that one ``lock_tasks`` takes them all in id order; one submitted between that read and
        the lock is locked after the others (rare: a deadlock it might cause is run again)."""
        family = {task_id}
        if descendants:
            family |= await self._descendants(tx, tenant_id, task_id)
        locked = await self.progress.lock_states(tx, {(tenant_id, t): None for t in family})
        while descendants and (tenant_id, task_id) in locked:
            more = await self._descendants(tx, tenant_id, task_id) - family
            if not more:
                break
            family |= more
            locked.update(await self.progress.lock_states(tx, {(tenant_id, t): None for t in more}))
        return locked

    async def _descendants(self, tx, tenant_id, task_id):
        found, level = set(), [task_id]
        for _ in range(MAX_DELEGATION_DEPTH):
            rows = await tx.fetch_all("unfinished_children", tenant_id=tenant_id, task_ids=level)
            level = [r["id"] for r in rows if r["id"] not in found]
            if not level:
                break
            found.update(level)
        return found

    async def pause(self, tenant_id, task_id) -> ControlResult:
        """Pause the task and its unfinished descendants that run (their ready steps held)."""
        (_, stop), summary = await self._control(tenant_id, task_id, self._pause, self._pause)
        return ControlResult(summary, stop)

    async def _pause(self, t: LockedTask) -> Changed:
        new = task_transition(t.status, TaskAction.PAUSE, t.task_id)
        if new == t.status:
            return Changed()  # already holds: a no-op
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=None, now=t.now, from_status=t.status)
        t.tx.defer("hold_ready_steps", tenant_id=t.tenant_id, now=t.now, ids=[
            s["id"] for s in t.states.values() if s["status"] == StepStatus.PENDING and s["ready_at"] is not None])
        self.events.at_commit(t.tx, "task.paused", t.tenant_id, t.task_id)
        return Changed(children=await self._children(t, lambda c: c["status"] in ACTIVE_TASK_STATUSES))

    async def resume(self, tenant_id, task_id) -> ControlResult:
        """Resume the task and its paused descendants."""
        (_, stop), summary = await self._control(tenant_id, task_id, self._resume, self._resume)
        return ControlResult(summary, stop)

    async def _resume(self, t: LockedTask) -> Changed:
        new = task_transition(t.status, TaskAction.RESUME, t.task_id)
        if new == t.status:
            return Changed()  # already holds
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=None, now=t.now, from_status=t.status)
        self.events.at_commit(t.tx, "task.resumed", t.tenant_id, t.task_id)  # before the task's end, if it ends now
        await self.progress.go_on(t.writes, t.tenant_id, t.task_id, t.states, new)
        return Changed(children=await self._children(t, lambda c: c["status"] == TaskStatus.PAUSED))

    async def _children(self, t: LockedTask, wanted, steps=None):
        """The ids of this task's child tasks (of its delegate steps, or of ``steps`` only) that
        ``wanted(row)`` picks; read under the task's lock, so no child is submitted meanwhile
        (the unfinished ones are locked too: _lock_family)."""
        rows = await t.tx.fetch_all("task_children", tenant_id=t.tenant_id, task_id=t.task_id)
        return [r["id"] for r in rows if wanted(r) and (steps is None or r["parent_step"] in steps)]

    async def cancel(self, tenant_id, task_id) -> ControlResult:
        """Cancel the task and its unfinished descendants: every unfinished step is cancelled,
        each task ends cancelled."""
        (_, stop), summary = await self._control(tenant_id, task_id, self._cancel, self._cancel)
        return ControlResult(summary, stop)

    async def cancel_within(self, tx, tenant_id, task_id) -> ControlResult:
        """Cancel the task and its descendants in the caller's transaction: a schedule's tick with
        overlap cancel_previous cancels the last task and creates its own in one commit (the
        schedule's row is locked before the tasks', never after)."""
        (_, stop), summary = await self._locked_change(tx, tenant_id, task_id, self._cancel, self._cancel)
        return ControlResult(summary, stop)

    async def _cancel(self, t: LockedTask) -> Changed:
        new = task_transition(t.status, TaskAction.CANCEL, t.task_id)
        if new == t.status:
            return Changed()
        stop = claims_to_stop(t.states.values())
        plan = await self.plans.get(t.tx, t.tenant_id, t.task_id)
        blocked = blocked_skips(plan.dag, t.states)  # a condition's skip has finished: it stays skipped
        t.tx.defer("cancel_unfinished_steps", tenant_id=t.tenant_id, now=t.now, ids=[
            s["id"] for n, s in t.states.items() if s["status"] in CANCELLABLE_STEPS and (
                s["status"] != StepStatus.SKIPPED or n in blocked)])
        t.tx.defer("set_task_status", tenant_id=t.tenant_id, task_id=t.task_id, status=new,
                   error=None, finished_at=t.now, now=t.now, from_status=t.status)
        self.plans.forget_at_commit(t.tx, t.tenant_id, t.task_id)
        self.events.at_commit(t.tx, "task.cancelled", t.tenant_id, t.task_id)
        await self.progress.wake_parent(t.tx, (t.tenant_id, t.task_id), "cancelled", t.now)
        return Changed(stop, await self._children(t, lambda c: c["status"] not in TERMINAL_TASK_STATUSES))

    async def modify(self, tenant_id, task_id, updates, rerun_from) -> ControlResult:
        """Apply human edits as new artifact versions and re-run the affected steps; the
        summary carries ``rerun``, the steps re-run.  The child tasks of delegate steps re-run
        (or given their output) are not waited for any more: they are cancelled with it."""
        (changed, stop), summary = await self._control(
            tenant_id, task_id, lambda t: self._modify(t, updates, rerun_from), self._cancel)
        summary["rerun"] = list(changed.rerun)
        return ControlResult(summary, stop)

    async def _modify(self, t: LockedTask, updates, rerun_from) -> "Modified":
        tx, now, states, tenant_id, task_id = t.tx, t.now, t.states, t.tenant_id, t.task_id
        status = t.status
        new = task_transition(status, TaskAction.MODIFY, task_id)
        plan = await self.plans.get(tx, tenant_id, task_id)
        cascade = cascade_plan(plan.dag, updates, rerun_from)
        stop = claims_to_stop(states[n] for n in cascade.interrupted)
        # a delegate step re-run or given its output no longer waits for its child: the child is cancelled
        children = await self._children(t, lambda c: c["status"] not in TERMINAL_TASK_STATUSES,
                                        set(cascade.rerun) | set(cascade.edited_outputs))
        # the task runs again: the steps skipped as it failed wait for their upstream again (unless re-run)
        blocked = blocked_skips(plan.dag, states)
        unblocked = [n for n in plan.dag.order if n in blocked and n not in cascade.rerun
                     and n not in cascade.edited_outputs]
        contents = {name: edited(plan.dag.steps[name], updates[name]["input"]) for name in cascade.edited_inputs}
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
            names = [n for n in (*cascade.rerun, *unblocked) if (n not in edited_inputs) == stale]
            tx.defer("reset_steps", ids=[states[n]["id"] for n in names], tenant_id=tenant_id,
                     input_stale=stale, now=now)
            for name in names:
                states[name].update(status=step_transition(states[name]["status"], StepStatus.PENDING),
                                    ready_at=None, input_stale=stale)
        for name in cascade.edited_inputs:
            version = (states[name]["input_version"] or 0) + 1
            lineage = {d: states[d]["output_version"] for d in plan.dag.steps[name].depends_on}
            t.writes.artifact(tenant_id, task_id, name, "input", version, contents[name], "manual", lineage)
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
        return Modified(stop, children, cascade.rerun)

    async def signal(self, tenant_id, task_id, step_name, payload, actor) -> ControlResult:
        """Deliver a signal to a step waiting for one (an approval's decision): it wakes with
        ``{"payload", "actor", "at"}``.  Two signals racing: the first to lock the task wins,
        the other finds the step no longer waiting (an InvalidStateError, nothing changed)."""
        _, summary = await self._control(tenant_id, task_id, lambda t: self._signal(t, step_name, payload, actor))
        return ControlResult(summary)

    async def _signal(self, t: LockedTask, step_name, payload, actor):
        row = t.states.get(step_name)
        if row is None:
            raise NotFoundError(f"task {t.task_id!r} has no step {step_name!r}")
        waiting_for = from_json(row["waiting_for"]) if row["waiting_for"] else {}
        if row["status"] != StepStatus.WAITING or waiting_for.get("kind") != "signal":
            now = (f"waits for {WAITS_FOR.get(str(waiting_for.get('kind')), 'something else')}"
                   if row["status"] == StepStatus.WAITING else f"is {row['status']}")
            raise InvalidStateError(f"step {step_name!r} of task {t.task_id!r} {now}: only a step waiting for a "
                                    "signal takes one (nothing was changed)")
        choices = waiting_for.get("choices")
        if choices is not None and payload.get("decision") not in choices:
            shown = repr(payload.get("decision"))[:80]
            raise InvalidInputError(f"step {step_name!r} takes a decision, one of {', '.join(choices)} "
                                    f"(as payload {{\"decision\": ...}}), got {shown}")
        step_transition(row["status"], StepStatus.PENDING)
        wake(t.writes, t.tenant_id, [row], t.status, {"payload": payload, "actor": actor, "at": t.now})
