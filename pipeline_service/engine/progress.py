"""Moving a task forward: the shared steps of every state change of a task.

Every state change (recording outcomes, recovery, hand-back, human control) locks the
task's row first, by primary key and in id order, then reads and changes its step rows
by primary key (docs/ARCHITECTURE.md, "the task row lock"); then decides the steps whose
dependencies have all ended (made ready with their inputs, or skipped); then settles a task
that can make no more progress.

A step runs when none of its dependencies failed and at least one succeeded (and its `when`,
if it has one, holds); a step whose dependencies were all skipped is skipped too.  A skip
decided here is a condition's: its task goes on.  The skips of a failed upstream are set as
the task fails (``skip_waiting_steps``); ``blocked_skips`` tells them apart.
"""
from collections import deque

from ..json_objects import from_json, to_json
from ..status import DONE_STEPS, IN_FLIGHT_STEPS, STEP_STATUS_GROUPS, StepStatus, TaskAction, TaskStatus, task_transition
from .caches import EngineCaches
from .events import Events
from .inputs import read_outputs
from .preparing import Prepared, prepare, reads_upstream
from .plans import Plans
from .records import ContentOptions
from .writes import Writes


# A task of at most this many steps is read whole by a finish (one statement for all such
# tasks of the batch) and settled from what was read; a larger one reads only the steps it
# touches and is settled by index look-ups, so its cost stays linear in its size.  Reading
# five rows costs less than picking two by id and then four look-ups to settle.
WHOLE_TASK_STEPS = 32
INCOMPLETE = STEP_STATUS_GROUPS["incomplete"]
WAIT, RUN, SKIP = "wait", "run", "skip"  # what the state of its dependencies says of a pending step


def progress_of(states):
    """What task_progress computes in SQL, from the states of all of a task's steps."""
    return dict(has_running=any(s["status"] in IN_FLIGHT_STEPS for s in states.values()),
                has_ready=any(s["status"] == StepStatus.PENDING and s["ready_at"] is not None
                              for s in states.values()),
                has_failed=any(s["status"] == StepStatus.FAILED for s in states.values()),
                has_incomplete=any(s["status"] in INCOMPLETE for s in states.values()))


def blocked_skips(dag, states):
    """The skipped steps (of all of a task's ``states``) that were skipped because an upstream
    step failed, not by a condition: in topological order, a skipped step with a dependency
    that did not end well (failed, cancelled, still pending) or was itself skipped that way.
    (A condition's skip has only dependencies that succeeded or were skipped by a condition;
    a re-run that changes a dependency re-runs the step too, so this stays true.)"""
    blocked = set()
    for name in dag.order:
        if states[name]["status"] == StepStatus.SKIPPED and any(
                d in blocked or states[d]["status"] not in DONE_STEPS for d in dag.steps[name].depends_on):
            blocked.add(name)
    return blocked


class Progress:
    def __init__(self, plans: Plans, caches: EngineCaches, events: Events, options: ContentOptions) -> None:
        self.plans = plans
        self.caches = caches
        self.events = events  # task.succeeded, task.failed: at commit
        self.options = options  # how artifacts are stored (compression)

    def writes(self, tx, now: int) -> Writes:
        return Writes(self.caches, tx, now, self.options)

    async def lock_states(self, tx, wanted):
        """Lock the task rows of ``wanted`` ({(tenant_id, task_id): step names, or None for all
        the task's steps}) in id order (see store/queries.sql, its head), then read those steps;
        for each task found, ``(states by step name, task status)`` as last committed."""
        tx.defer("lock_tasks", task_ids=sorted({k[1] for k in wanted}), tenant_ids=sorted({k[0] for k in wanted}))
        rows, ids = [], []
        whole = sorted(key for key, names in wanted.items() if names is None)
        if len(whole) == 1:
            rows += await tx.fetch_all("task_step_states", tenant_id=whole[0][0], task_id=whole[0][1])
        elif whole:
            rows += await tx.fetch_all("tasks_step_states", tenant_ids=sorted({k[0] for k in whole}),
                                       task_ids=[k[1] for k in whole])
        for key, names in wanted.items():
            if names is not None:
                ids += [(await self.plans.get(tx, *key)).ids[n] for n in names]
        if ids:
            rows += await tx.fetch_all("step_states", ids=ids, tenant_ids=sorted({k[0] for k in wanted}))
        locked = {}
        for r in rows:
            key = (r["tenant_id"], r["task_id"])
            if key in wanted:
                locked.setdefault(key, ({}, r["task_status"]))[0][r["step_name"]] = r
        return locked

    async def touched(self, tx, outcomes):
        """The steps a finish of ``outcomes`` reads, by task: all of a small task's
        (WHOLE_TASK_STEPS: None), else the finished steps, the successors of those that
        succeeded, and of each successor the dependency that held it back when last looked
        at (see verdict) — never all the steps of a large task."""
        touched = {}
        for o in outcomes:
            key = (o.claim.tenant_id, o.claim.task_id)
            if (await self.plans.get(tx, *key)).size <= WHOLE_TASK_STEPS:
                touched[key] = None
                continue
            names = touched.setdefault(key, set())
            names.add(o.claim.step_name)
            if o.succeeded:
                dag = (await self.plans.get(tx, *key)).dag
                for succ in dag.successors[o.claim.step_name]:
                    deps = dag.steps[succ].depends_on
                    names.update((succ, deps[self.caches.blockers.get((*key, succ), 0) % len(deps)]))
        return touched

    async def _read_states(self, tx, key, plan, names, states):
        """Add the states of steps ``names`` of task ``key`` to ``states`` (its task is locked)."""
        if names:
            for r in await tx.fetch_all("step_states", ids=[plan.ids[n] for n in names], tenant_ids=[key[0]]):
                states[r["step_name"]] = r

    async def advance(self, writes, tenant_id, task_id, states, finished, plan=None):
        """Decide every pending step whose dependencies have all ended: the successors of
        ``finished`` (their states read), or all steps when ``finished`` is None (all states
        read).  Made ready with its input, or skipped (its `when` is false, or its dependencies
        were all skipped: then its own successors are decided too).  True if it made one ready
        (then the task can go on: no need to settle it)."""
        plan = plan or await self.plans.get(writes.tx, tenant_id, task_id)
        dag, key = plan.dag, (tenant_id, task_id)
        candidates = deque(dag.order if finished is None else [s for f in finished for s in dag.successors[f]])
        made = False
        while candidates:
            name = candidates.popleft()
            if name not in states:  # a successor of a step skipped just now, in a large task
                await self._read_states(writes.tx, key, plan, [name], states)
            row = states[name]
            if row["status"] != StepStatus.PENDING or row["ready_at"] is not None:
                continue
            verdict = await self.verdict(writes.tx, key, plan, name, states)
            if verdict == RUN and await self._make_ready(writes, tenant_id, task_id, plan, name, states):
                made = True
            elif verdict != WAIT:  # skipped: its successors may be decided now
                if verdict == SKIP:
                    self._skip(writes, key, name, states, None, "every dependency was skipped")
                if finished is not None:  # (in topological order they come later anyway)
                    candidates.extend(dag.successors[name])
        return made

    async def verdict(self, tx, key, plan, name, states):
        """RUN if no dependency of step ``name`` is unfinished or failed and one succeeded (a root
        step always), SKIP if all were skipped, else WAIT (reading the states missing from
        ``states``).  The dependencies are looked at from the one found unfinished last
        time (``caches.blockers``, per process), in chunks that double: in a fan-in of n steps
        a finish reads O(1) rows, all of them n in all (not n²)."""
        deps = plan.dag.steps[name].depends_on
        memo = (*key, name)
        start, looked, chunk = self.caches.blockers.get(memo, 0), 0, 1
        while looked < len(deps):
            part = [deps[(start + i) % len(deps)] for i in range(looked, min(looked + chunk, len(deps)))]
            await self._read_states(tx, key, plan, [d for d in part if d not in states], states)
            for i, dep in enumerate(part, start=looked):
                if states[dep]["status"] not in DONE_STEPS:
                    self.caches.blockers[memo] = (start + i) % len(deps)
                    return WAIT
            looked, chunk = looked + len(part), chunk * 2
        self.caches.blockers.pop(memo, None)
        if deps and all(states[d]["status"] == StepStatus.SKIPPED for d in deps):
            return SKIP
        return RUN

    def _skip(self, writes, key, name, states, input_version, reason):
        row = states[name]
        writes.skip(row["id"], input_version)
        row.update(status=StepStatus.SKIPPED, ready_at=None)
        if input_version is not None:
            row.update(input_version=input_version, input_stale=0)
        self.events.at_commit(writes.tx, "step.skipped", *key, step_name=name, reason=reason)

    async def _make_ready(self, writes, tenant_id, task_id, plan, name, states):
        """Make a step ready with its input: the current one, or a new version made from the
        upstream output versions in force (the 'pinned' versions), stored by reference to them
        (engine/inputs.py), its `when` decided and its config rendered (``preparing.prepare``:
        only a step with either reads its upstream outputs' contents here).  False if its
        `when` is false: it is skipped."""
        row = states[name]
        version = row["input_version"]
        if version is None or row["input_stale"]:
            step = plan.dag.steps[name]
            # a skipped dependency made no output in this run: it is not part of the input
            lineage = {dep: states[dep]["output_version"] for dep in step.depends_on
                       if states[dep]["status"] != StepStatus.SKIPPED}
            prepared = Prepared(True)
            if reads_upstream(step):
                texts = await read_outputs(writes.tx, tenant_id, task_id, lineage, writes.known_outputs(
                    tenant_id, task_id, lineage))
                prepared = prepare(step, from_json(plan.params_text),
                                   {dep: from_json(texts[dep]) for dep in lineage})
            version = (version or 0) + 1
            writes.input_by_reference(tenant_id, task_id, name, version, lineage, prepared.extra)
            if not prepared.runs:
                self._skip(writes, (tenant_id, task_id), name, states, version, "its when is false")
                return False
        writes.ready(tenant_id, row["id"], version)
        row.update(ready_at=writes.now, input_version=version, input_stale=0)
        return True

    async def skip_at_submit(self, writes, key, plan, states, names):
        """A task being submitted: skip its root steps ``names`` (their `when` is false, their input
        is version 1) and what that decides; settle the task if none of its steps runs."""
        for name in names:
            self._skip(writes, key, name, states, 1, "its when is false")
        await self.advance(writes, *key, states, names, plan)
        writes.flush()
        if not any(s["ready_at"] is not None for s in states.values()):
            await self.settle(writes.tx, {key: TaskStatus.PENDING}, writes.now, {key: states})

    async def go_on(self, writes, tenant_id, task_id, states, status):
        """Make ready what can run now in a task that runs (or has not started); end it if
        nothing can (every step succeeded, or a failure blocks the rest)."""
        if not await self.advance(writes, tenant_id, task_id, states, None):
            writes.flush()
            await self.settle(writes.tx, {(tenant_id, task_id): status}, writes.now)

    async def settle(self, tx, statuses, now, whole=None):
        """End the tasks of ``statuses`` ({(tenant_id, task_id): status}) that can make no more
        progress (no step running or ready): succeeded, or failed with the errors of their
        failed steps.  A task whose states were all read (``whole``: {key: states}, as changed
        by this transaction) is decided from them; any other by counters (task_progress: a few
        index look-ups per task, after this transaction's writes), never by reading every step."""
        whole = whole or {}
        counted = {k: s for k, s in statuses.items() if k not in whole}
        found = [dict(progress_of(whole[k]), tenant_id=k[0], task_id=k[1]) for k in statuses if k in whole]
        if counted:
            found += await tx.fetch_all("task_progress", task_ids=sorted({k[1] for k in counted}),
                                        tenant_ids=sorted({k[0] for k in counted}))
        for r in found:
            key = (r["tenant_id"], r["task_id"])
            if key not in statuses or r["has_running"] or r["has_ready"]:
                continue
            ids = dict(tenant_id=key[0], task_id=key[1])
            if not r["has_incomplete"]:
                tx.defer("set_task_status", status=task_transition(statuses[key], TaskAction.SUCCEED, key[1]),
                         error=None, finished_at=now, now=now, from_status=statuses[key], **ids)
                self.events.at_commit(tx, "task.succeeded", *key)
                await self.wake_parent(tx, key, "succeeded", now)
            elif r["has_failed"]:
                position = (await self.plans.get(tx, *key)).dag.position
                failed = ([s for s in whole[key].values() if s["status"] == StepStatus.FAILED] if key in whole
                          else await tx.fetch_all("failed_steps", **ids))
                failed.sort(key=lambda f: position[f["step_name"]])
                error = "; ".join(f"step {f['step_name']!r} failed: {f['error']}" for f in failed)
                tx.defer("skip_waiting_steps", now=now, **ids)
                tx.defer("set_task_status", status=task_transition(statuses[key], TaskAction.FAIL, key[1]),
                         error=error, finished_at=now, now=now, from_status=statuses[key], **ids)
                self.events.at_commit(tx, "task.failed", *key, error=error)
                await self.wake_parent(tx, key, "failed", now)
            else:
                continue
            self.plans.forget_at_commit(tx, *key)

    async def wake_parent(self, tx, key, status, now):
        """The task ``key`` has ended (``status``): if a delegate step of another task waits for it,
        that step is due (engine/waiting.py: written under this task's lock, not the parent's)."""
        plan = self.plans.cached(*key)
        if plan is not None:
            parent = plan.parent
        else:  # one look-up by primary key, not the whole plan
            row = await tx.fetch_one("task_lineage", tenant_id=key[0], task_id=key[1])
            parent = (row["parent_task_id"], row["parent_step"]) if row and row["parent_task_id"] else None
        if parent is not None:
            tx.defer("wake_parent_step", tenant_id=key[0], task_id=parent[0], step_name=parent[1], now=now,
                     woken_by=to_json({"child_task_id": key[1], "status": status}))
