"""Domain operations over the storage: what a task and its steps can do, in SQL terms.

The manager speaks in operations (submit, claim, start a step, finish it, read a
task); each runs in one transaction, so a crash between two of them leaves the
database in a state the executor can continue from.  It never runs handlers.
"""
from collections import Counter
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from . import state
from .artifacts import Writes, check_copies, from_json, to_json
from .control import ControlOperations
from .exceptions import HandlerError, InvalidInputError, NotFoundError
from .handler import get_handler
from .ids import iso, new_id, now_ms
from .views import step_view, task_summary

# task plans kept in memory, bounded by their total number of steps (a plan's size is its
# steps: ~0.6 KB each), so memory is flat in both the number and the size of tasks; a
# finished task's plan is dropped.  Fair dispatch keeps a task of every tenant with work in
# flight, and an LRU cache smaller than the tasks in flight hits nothing: each step then
# re-reads its task's plan (2,000 tenants ran at 40% of 4).  ~25 MB at the bound.
PLAN_CACHE_STEPS = 40_960
ARTIFACT_CACHE_SIZE = 4096  # recent inputs and outputs made here (bounded)
DEFINITION_CACHE_SIZE = 256
# a pipeline definition is read by a submit at most once per this many seconds (per
# process): an edit made in pipeline_core reaches new tasks within it (see docs/SEMANTICS.md)
DEFINITION_TTL_SECONDS = 1.0
TENANTS_PER_CLAIM = 32   # tenants with ready steps read per refresh (a page, in tenant id order)
TENANTS_PER_STATEMENT = 64  # tenants a claim asks in one statement (a SELECT each, joined by UNION ALL)
TENANT_REFRESH_MS = 50   # how stale the list of tenants with ready steps may be
TENANT_MEMORY = 65536    # tenants whose last claim round is remembered (to serve the others first)
BLOCKER_MEMORY = 65536   # waiting steps whose unfinished dependency is remembered (see _dependencies_succeeded)


def equal_shares(queue, left, slots):
    """``slots`` split evenly over the tenants of ``queue``, in its order, none past its
    ``left``: {tenant: share} for the first TENANTS_PER_STATEMENT tenants that get any."""
    shares = {}
    for i, tenant in enumerate(queue):
        if slots <= 0 or len(shares) == TENANTS_PER_STATEMENT:
            break
        shares[tenant] = min(left[tenant], -(-slots // (len(queue) - i)))
        slots -= shares[tenant]
    return shares


def plan_steps(plan):
    return len(plan.dag.steps)


@dataclass(frozen=True)
class TaskPlan:
    """What never changes in a task after submit: its DAG, its params and its step row ids."""

    dag: state.Dag
    params: dict
    ids: dict  # step name -> step row id


@dataclass(frozen=True)
class Claim:
    """A step this process has claimed: the claim token is (owner, attempt)."""

    id: str
    tenant_id: str
    task_id: str
    step_name: str
    attempt: int       # ever made, this one included: with owner, the claim token
    attempt_base: int  # attempts made before the step's last re-run
    owner: str
    input_version: int

    @property
    def run_attempt(self):
        """This attempt's number within the current run (1 = first), for the retry budget."""
        return self.attempt - self.attempt_base


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``output`` (succeeded), or ``error`` with a ``retry_delay``
    (another attempt follows) or without one (the step failed)."""

    claim: Claim
    output: dict = None
    error: str = None
    retry_delay: float = None


class Manager(ControlOperations):
    def __init__(self, storage):
        self.storage = storage
        self._plans = LRUCache(PLAN_CACHE_STEPS, getsizeof=plan_steps)
        self._inputs = LRUCache(ARTIFACT_CACHE_SIZE)   # inputs made here, until the step is claimed
        self._outputs = LRUCache(ARTIFACT_CACHE_SIZE)  # outputs stored here, for the inputs they feed
        self._definitions = TTLCache(DEFINITION_CACHE_SIZE, DEFINITION_TTL_SECONDS)  # pipeline id -> Dag
        self._ready_tenants = set()    # tenants believed to have ready steps (see claim_ready)
        self._tenants_checked_at = 0
        self._tenant_cursor = ""       # the last tenant of the last page read (see _tenants_with_ready_steps)
        self._served = LRUCache(TENANT_MEMORY)  # tenant -> claim round it was last served in
        self._rounds = 0
        self._blockers = LRUCache(BLOCKER_MEMORY)  # (tenant, task, step) -> index of a dependency not succeeded

    # ---- pipelines -------------------------------------------------------
    async def define_pipeline(self, pipeline_id, steps, name=None, description=None):
        """Create or replace a pipeline definition (rows of pipelines / pipeline_steps);
        ``steps`` are checked rows (``state.definition_rows``)."""
        rows = [dict(row, id=new_id(), pipeline_id=pipeline_id) for row in steps]

        async def write(tx):
            # pipelines may be pipeline_core's table with a case-insensitive collation:
            # never let 'ORG1' replace 'org1' there
            found = {r["pipeline"] for r in await tx.fetch_all("get_pipeline_definition", pipeline_id=pipeline_id)}
            if found - {pipeline_id}:
                raise InvalidInputError(f"pipeline {pipeline_id!r} collides with pipeline {min(found)!r} in the "
                                        "database (pipelines.id is not compared exactly: run create-schema "
                                        "--with-reference to give it a binary collation)")
            tx.defer("delete_pipeline_steps", pipeline_id=pipeline_id)
            tx.defer("delete_pipeline", pipeline_id=pipeline_id)
            tx.defer("insert_pipeline", id=pipeline_id, name=name or pipeline_id, description=description)
            tx.defer_many("insert_pipeline_step", rows)
            tx.on_commit(lambda: self._definitions.pop(pipeline_id, None))
        await self.storage.atomic(write)
        return {"id": pipeline_id, "steps": [r["step_name"] for r in rows]}

    # ---- submit ------------------------------------------------------------
    async def submit(self, tenant_id, pipeline_id, owner_id, title, params, require_handlers=True):
        task_id, now = new_id(), now_ms()
        params_text = to_json(params)
        params = from_json(params_text)  # the task's own copy: a caller reusing its dict changes nothing here

        async def write(tx):
            dag = await self._definition(tx, pipeline_id)
            missing = [(s.name, s.step_type) for s in dag.steps.values() if get_handler(s.step_type) is None]
            if missing and require_handlers:
                raise HandlerError("no handler is registered for " + ", ".join(
                    f"step_type {t!r} (step {n!r})" for n, t in missing) + "; register one with register_handler()")
            tx.defer("insert_task", id=task_id, tenant_id=tenant_id, pipeline_id=pipeline_id,
                     owner_id=owner_id, title=title, params=params_text, status="pending", now=now)
            roots = set(dag.roots())  # ready at once, with their inputs
            check_copies(params_text, len(roots) + 1, "params")
            ids = {name: new_id() for name in dag.order}
            writes = Writes(self, tx, now)
            for name in roots:
                writes.artifact(tenant_id, task_id, name, "input", 1, {"params": params, "upstream": {}}, "engine", {})
            writes.flush()
            tx.defer_many("insert_step", [dict(
                id=ids[name], tenant_id=tenant_id, task_id=task_id, step_name=name,
                step_type=dag.steps[name].step_type, depends_on=to_json(list(dag.steps[name].depends_on)),
                config=to_json(dag.steps[name].config), seq=dag.steps[name].seq,
                input_version=1 if name in roots else None, ready_at=now if name in roots else None, now=now)
                for name in dag.order])
            self._remember(tenant_id, task_id, TaskPlan(dag, params, ids))
            tx.on_commit(lambda: self._ready_tenants.add(tenant_id))
            return dict(id=task_id, tenant_id=tenant_id, pipeline_id=pipeline_id, owner_id=owner_id, title=title,
                        status="pending", error=None, n_total=len(dag.order), n_succeeded=0, n_running=0,
                        n_failed=0, created_at=now, updated_at=now, started_at=None, finished_at=None)
        return task_summary(await self.storage.atomic(write))

    async def _definition(self, tx, pipeline_id):
        """The DAG of a pipeline as defined (cached for DEFINITION_TTL_SECONDS)."""
        dag = self._definitions.get(pipeline_id)
        if dag is None:
            rows = [r for r in await tx.fetch_all("get_pipeline_definition", pipeline_id=pipeline_id)
                    if r["pipeline"] == pipeline_id]  # exactly this id, whatever the table's collation
            if not rows:
                raise NotFoundError(f"pipeline {pipeline_id!r} does not exist")
            dag = state.Dag.from_rows([r for r in rows if r["step_name"] is not None], f"pipeline {pipeline_id!r}")
            self._definitions[pipeline_id] = dag
        return dag

    # ---- reading -------------------------------------------------------------
    async def list_tasks(self, tenant_id, pipeline_id, status, page, rows):
        async def read(tx):
            filters = dict(tenant_id=tenant_id, pipeline_id=pipeline_id, status=status)
            total = (await tx.fetch_one("count_tasks", **filters))["n"]
            found = await tx.fetch_all("list_tasks", limit=rows, offset=(page - 1) * rows, **filters)
            return {"total": int(total), "rows": [task_summary(r) for r in found]}
        return await self.storage.atomic(read)

    async def task_detail(self, tenant_id, task_id):
        async def read(tx):
            task = await self._task(tx, tenant_id, task_id)
            steps = await tx.fetch_all("get_steps", tenant_id=tenant_id, task_id=task_id)
            return task, steps
        task, steps = await self.storage.atomic(read)
        dag = state.Dag.from_rows(steps, f"task {task_id!r}")
        by_name = {s["step_name"]: s for s in steps}
        detail = task_summary(task)
        detail["params"] = from_json(task["params"])
        detail["steps"] = [step_view(by_name[name]) for name in dag.order]
        return detail

    async def node(self, tenant_id, task_id, step_name, version):
        async def read(tx):
            await self._task(tx, tenant_id, task_id)
            step = await tx.fetch_one("get_step", tenant_id=tenant_id, task_id=task_id, step_name=step_name)
            if step is None:
                raise NotFoundError(f"task {task_id!r} has no step {step_name!r}")
            versions = await tx.fetch_all("list_artifact_versions", tenant_id=tenant_id, task_id=task_id,
                                          step_name=step_name)
            outputs = [v["version"] for v in versions if v["kind"] == "output"]
            chosen = version if version is not None else (max(outputs) if outputs else None)
            if version is not None and version not in outputs:
                raise NotFoundError(f"step {step_name!r} of task {task_id!r} has no output version {version}")
            output = input_ = None
            input_version = step["input_version"]
            if chosen is not None:
                output = await tx.fetch_one("get_artifact", tenant_id=tenant_id, task_id=task_id,
                                            step_name=step_name, kind="output", version=chosen)
                input_version = (from_json(output["lineage"]) or {}).get("input_version")
            if input_version is not None:
                input_ = await tx.fetch_one("get_artifact", tenant_id=tenant_id, task_id=task_id,
                                            step_name=step_name, kind="input", version=input_version)
            return step, chosen, output, input_, versions
        step, chosen, output, input_, versions = await self.storage.atomic(read)
        return {
            "step": step_view(step),
            "version": chosen,
            "input": from_json(input_["content"]) if input_ else None,
            "input_version": input_["version"] if input_ else None,
            "output": from_json(output["content"]) if output else None,
            "versions": [{"kind": v["kind"], "version": v["version"], "source": v["source"],
                          "created_at": iso(v["created_at"])} for v in versions],
        }

    async def _task(self, tx, tenant_id, task_id):
        task = await tx.fetch_one("get_task", tenant_id=tenant_id, task_id=task_id)
        if task is None:  # another tenant's task is indistinguishable from none
            raise NotFoundError(f"task {task_id!r} does not exist")
        return task

    # ---- caches: task plans (immutable) and inputs made here, both bounded --------
    def _remember(self, tenant_id, task_id, plan):
        if plan_steps(plan) <= self._plans.maxsize:  # a larger DAG is read when needed, never cached
            self._plans[(tenant_id, task_id)] = plan

    async def plan(self, tx, tenant_id, task_id):
        plan = self._plans.get((tenant_id, task_id))
        if plan is None:
            rows = await tx.fetch_all("get_steps", tenant_id=tenant_id, task_id=task_id)
            task = await tx.fetch_one("task_state", tenant_id=tenant_id, task_id=task_id)
            plan = TaskPlan(state.Dag.from_rows(rows, f"task {task_id!r}"), from_json(task["params"]),
                            {r["step_name"]: r["id"] for r in rows})
            self._remember(tenant_id, task_id, plan)
        return plan

    def forget(self, tenant_id, task_id):
        self._plans.pop((tenant_id, task_id), None)

    # ---- executing ---------------------------------------------------------------
    async def claim_ready(self, owner, free, lease_ms, step_types, running_per_tenant, tenant_limit=None):
        """Claim up to ``free`` ready steps of ``step_types``, spread fairly over tenants.

        Tenants with ready steps are served in turn: the one with the fewest steps
        running here first, then the one served longest ago, each to an equal share of
        the free slots, never past ``tenant_limit`` running here; slots a tenant cannot
        use go, in further passes, to the tenants not asked yet, then to those that had
        more.  A pass asks up to TENANTS_PER_STATEMENT tenants in one statement: one round
        trip however many tenants (with thousands of tenants of a few steps each, a
        statement per tenant cost a round trip per claimed step).  Claiming a root step
        marks its task started (just after the claim, see _mark_started).
        """
        def room(tenant):
            limit = free if tenant_limit is None else tenant_limit - running_per_tenant.get(tenant, 0)
            return max(0, limit)

        async def claim(tx):
            now = now_ms()
            self._rounds += 1
            tenants = sorted(await self._tenants_with_ready_steps(tx, now),
                             key=lambda t: (running_per_tenant.get(t, 0), self._served.get(t, 0)))
            left = {t: room(t) for t in tenants}
            queue, claimed = [t for t in tenants if left[t] > 0], []
            while queue and len(claimed) < free:  # each pass claims a step or drops the tenants it asked
                shares = equal_shares(queue, left, free - len(claimed))
                got = await self._claim_for(tx, shares, owner, lease_ms, step_types, now)
                counts = Counter(r["tenant_id"] for r in got)
                short = {t for t, share in shares.items() if counts[t] < share}  # no more it can run here
                for tenant in shares:
                    self._served[tenant] = self._rounds
                    left[tenant] -= counts[tenant]
                self._ready_tenants.difference_update(short)
                claimed += got
                queue = [t for t in queue if t not in shares] + [t for t in shares if t not in short and left[t]]
            return claimed, now
        claimed, now = await self.storage.atomic(claim)
        roots = {(r["tenant_id"], r["task_id"]) for r in claimed if not state.parse_depends_on(r["depends_on"])}
        if roots:
            await self._mark_started(roots, now)
        return [Claim(r["id"], r["tenant_id"], r["task_id"], r["step_name"], int(r["attempt"]) + 1,
                      int(r["attempt_base"]), owner, r["input_version"]) for r in claimed]

    async def _mark_started(self, keys, now):
        """Mark the tasks ``{(tenant_id, task_id)}`` started (the first claim of a root step).

        A transaction of its own, after the claim's: a claim holds step rows and must
        never wait for a task row, which a state change holds while it waits for step
        rows (a deadlock).  The handlers start only after this, so a step never ends
        before its task is `running`; a crash in between leaves the step to recovery.
        """
        async def write(tx):
            tx.defer("mark_tasks_started", tenant_ids=sorted({k[0] for k in keys}),
                     task_ids=sorted({k[1] for k in keys}), now=now)
        await self.storage.atomic(write)

    async def _tenants_with_ready_steps(self, tx, now):
        """Tenants believed to have ready steps: those that submitted here or had steps made
        ready here, and, read at most every TENANT_REFRESH_MS, the next page of the tenants
        with ready steps in the database (TENANTS_PER_CLAIM of them in tenant id order after
        the last page, from the first again after the last one): every tenant with ready
        steps is found within ceil(tenants / TENANTS_PER_CLAIM) refreshes, however many
        there are and however large their backlogs.  A tenant leaves the list when a
        claim finds nothing of it to run."""
        if now - self._tenants_checked_at >= TENANT_REFRESH_MS:
            rows = await tx.fetch_all("tenants_with_ready_steps", after=self._tenant_cursor, now=now,
                                      limit=TENANTS_PER_CLAIM)
            self._tenant_cursor = rows[-1]["tenant_id"] if len(rows) == TENANTS_PER_CLAIM else ""
            self._ready_tenants.update(r["tenant_id"] for r in rows)
            self._tenants_checked_at = now
        return list(self._ready_tenants)

    async def _claim_for(self, tx, shares, owner, lease_ms, step_types, now):
        """Claim up to ``shares[tenant]`` ready steps of each tenant, oldest first, in one statement."""
        rows = await tx.fetch_union("select_ready_steps", [
            dict(tenant_id=tenant, now=now, step_types=step_types, limit=share) for tenant, share in shares.items()])
        if rows:  # locked above (FOR UPDATE): all of them are claimed
            tx.defer("claim_steps", ids=[r["id"] for r in rows], owner=owner, lease_expires_at=now + lease_ms,
                     now=now)
        return rows

    async def heartbeat(self, owner, lease_ms, claims):
        """Extend the leases of ``claims`` (the ones running here, and only those); return
        those the owner no longer holds (same step and attempt, still running)."""
        ids = sorted({c.id for c in claims})

        async def extend(tx):
            tx.defer("extend_leases", owner=owner, ids=ids, lease_expires_at=now_ms() + lease_ms)
        await self.storage.atomic(extend)
        held = {(r["id"], int(r["attempt"]))
                for r in await self.storage.probe("owned_running_steps", owner=owner, ids=ids)}
        return [c for c in claims if (c.id, c.attempt) not in held]

    async def release(self, claims):
        """Hand back claims that will not be finished (a graceful stop): each step still held
        by its claim is ready again at once (held, if its task is paused), its attempt counted
        neither as a failure nor as a crash. Returns how many were handed back."""
        async def write(tx):
            now = now_ms()
            wanted = {}  # task -> its steps handed back
            for c in claims:
                wanted.setdefault((c.tenant_id, c.task_id), []).append(c.step_name)
            locked = await self._lock_states(tx, wanted)
            released = 0
            for c in claims:
                task_status = locked.get((c.tenant_id, c.task_id), ({}, None))[1]
                ready_at = now if task_status in ("pending", "running") else None
                released += await tx.execute("release_step", id=c.id, attempt=c.attempt, owner=c.owner,
                                             ready_at=ready_at, now=now)
            tx.on_commit(lambda: self._ready_tenants.update(c.tenant_id for c in claims))
            return released
        return await self.storage.atomic(write)

    async def recover_expired(self, now, max_crashes, limit=100):
        """Take back running steps whose lease expired (their worker died): run them again,
        or fail them once they have lost their worker ``max_crashes`` times."""
        recovered = 0
        for row in await self.storage.probe("expired_steps", now=now, limit=limit):
            async def recover(tx, row=row):
                key = (row["tenant_id"], row["task_id"])
                states, task_status = (await self._lock_states(tx, {key: [row["step_name"]]})).get(key, ({}, None))
                step = states.get(row["step_name"])
                if step is None or step["status"] != "running":
                    return 0
                if step["crash_count"] + 1 >= max_crashes:
                    error = (f"lost its worker {step['crash_count'] + 1} times (the process died or stalled "
                             f"mid-step); not run again")
                    if await tx.execute("fail_lost_step", id=row["id"], error=error, now=now) != 1:
                        return 0
                    if task_status in ("pending", "running"):  # pending: it died before the task started
                        await self._settle(tx, {key: task_status}, now)
                    return 1
                ready_at = now if task_status in ("pending", "running") else None
                return await tx.execute("recover_step", id=row["id"], ready_at=ready_at, now=now)
            recovered += await self.storage.atomic(recover)
        return recovered

    async def start_step(self, claim):
        """The claimed step's definition and input (stored when it became ready)."""
        key = (claim.tenant_id, claim.task_id, claim.step_name, claim.input_version)
        cached = self._inputs.pop(key, None)
        plan = self._plans.get((claim.tenant_id, claim.task_id))
        if plan is not None and cached is not None:
            return plan.dag.steps[claim.step_name], cached  # the common case: nothing to read

        async def read(tx):
            plan = await self.plan(tx, claim.tenant_id, claim.task_id)
            if cached is not None:
                return plan.dag.steps[claim.step_name], cached
            artifact = await tx.fetch_one("get_artifact", tenant_id=claim.tenant_id, task_id=claim.task_id,
                                          step_name=claim.step_name, kind="input", version=claim.input_version)
            return plan.dag.steps[claim.step_name], from_json(artifact["content"])
        return await self.storage.atomic(read)

    async def finish(self, outcomes):
        """Record the outcomes of finished attempts, all in one transaction (a group commit).

        Each outcome is fenced by its claim (still running, same attempt and owner,
        checked on the locked rows); returns, per outcome, whether it was recorded.
        Successes store their output and make the successors ready with their inputs;
        failures with a retry delay go back to the queue; final failures fail the step.
        """
        async def write(tx):
            now = now_ms()
            locked = await self._lock_states(tx, await self._touched(tx, outcomes))
            writes = Writes(self, tx, now)
            recorded, succeeded, changed = [], [], {}
            for o in outcomes:
                c, key = o.claim, (o.claim.tenant_id, o.claim.task_id)
                states, task_status = locked.get(key, ({}, None))
                row = states.get(c.step_name)
                if row is None or (row["status"], row["attempt"], row["owner"]) != ("running", c.attempt, c.owner):
                    recorded.append(False)  # the claim was taken away: the result is discarded
                    continue
                recorded.append(True)
                if o.output is not None:
                    version = (row["output_version"] or 0) + 1
                    writes.artifact(c.tenant_id, c.task_id, c.step_name, "output", version, o.output, "engine",
                                    {"input_version": c.input_version})
                    succeeded.append(c.id)
                    row.update(status="succeeded", output_version=version)
                    changed.setdefault(key, []).append(c.step_name)
                elif o.retry_delay is not None:
                    # a paused task holds the step: resume makes it ready again
                    ready_at = now + int(o.retry_delay * 1000) if task_status in ("pending", "running") else None
                    tx.defer("requeue_step", id=c.id, ready_at=ready_at, error=o.error, attempt=c.attempt,
                             owner=c.owner, now=now)
                    row.update(status="pending", ready_at=ready_at)
                else:
                    tx.defer("fail_step", id=c.id, error=o.error, attempt=c.attempt, owner=c.owner, now=now)
                    row.update(status="failed", error=o.error)
                    changed.setdefault(key, [])
            if succeeded:  # checked running on the locked rows above
                tx.defer("succeed_steps", ids=succeeded, now=now)
            unsettled = {}  # running tasks in which nothing was made ready: they may have ended
            for key, finished in changed.items():
                states, task_status = locked[key]
                if task_status == "running" and not await self._advance(writes, *key, states, finished):
                    unsettled[key] = task_status
            writes.flush()
            await self._settle(tx, unsettled, now)
            return recorded
        return await self.storage.atomic(write)

    # ---- the shared steps of every state change -------------------------------------
    async def _lock_states(self, tx, wanted):
        """Lock the task rows of ``wanted`` ({(tenant_id, task_id): step names, or None for all
        the task's steps}) in id order (see queries.STEP_STATES), then read those steps;
        for each task found, ``(states by step name, task status)`` as last committed."""
        tx.defer("lock_tasks", task_ids=sorted({k[1] for k in wanted}), tenant_ids=sorted({k[0] for k in wanted}))
        rows, ids = [], []
        for key, names in wanted.items():
            if names is None:
                rows += await tx.fetch_all("task_step_states", tenant_id=key[0], task_id=key[1])
            else:
                ids += [(await self.plan(tx, *key)).ids[n] for n in names]
        if ids:
            rows += await tx.fetch_all("step_states", ids=ids, tenant_ids=sorted({k[0] for k in wanted}))
        locked = {}
        for r in rows:
            key = (r["tenant_id"], r["task_id"])
            if key in wanted:
                locked.setdefault(key, ({}, r["task_status"]))[0][r["step_name"]] = r
        return locked

    async def _touched(self, tx, outcomes):
        """The steps a finish of ``outcomes`` reads, by task: the finished steps, the successors
        of those that succeeded, and of each successor the dependency that held it back when
        last looked at (see _dependencies_succeeded) — never all the steps of a task."""
        touched = {}
        for o in outcomes:
            key = (o.claim.tenant_id, o.claim.task_id)
            names = touched.setdefault(key, set())
            names.add(o.claim.step_name)
            if o.output is not None:
                dag = (await self.plan(tx, *key)).dag
                for succ in dag.successors[o.claim.step_name]:
                    deps = dag.steps[succ].depends_on
                    names.update((succ, deps[self._blockers.get((*key, succ), 0) % len(deps)]))
        return touched

    async def _read_states(self, tx, key, plan, names, states):
        """Add the states of steps ``names`` of task ``key`` to ``states`` (its task is locked)."""
        if names:
            for r in await tx.fetch_all("step_states", ids=[plan.ids[n] for n in names], tenant_ids=[key[0]]):
                states[r["step_name"]] = r

    def _artifact_row(self, tx, tenant_id, task_id, step_name, kind, version, content, source, lineage, now):
        # cached once committed (a rolled-back version number may be stored later by another run),
        # as decoded from the stored text: nobody else's object (a caller's, a handler's), equal to what is stored
        text = to_json(content)
        tx.on_commit(lambda: self._cache(kind, (tenant_id, task_id, step_name, version), from_json(text)))
        return dict(id=new_id(), tenant_id=tenant_id, task_id=task_id, step_name=step_name, kind=kind,
                    version=version, content=text, source=source, lineage=to_json(lineage), now=now)

    async def _advance(self, writes, tenant_id, task_id, states, finished):
        """Make ready every waiting step whose dependencies all succeeded: the successors of
        ``finished`` (their states read), or all steps when ``finished`` is None (all states
        read); True if it made one ready (then the task can go on: no need to settle it)."""
        plan = await self.plan(writes.tx, tenant_id, task_id)
        dag = plan.dag
        candidates = dag.order if finished is None else [s for f in finished for s in dag.successors[f]]
        made = False
        for name in dict.fromkeys(candidates):
            row = states[name]
            if row["status"] == "pending" and row["ready_at"] is None and await self._dependencies_succeeded(
                    writes.tx, (tenant_id, task_id), plan, name, states):
                await self._make_ready(writes, tenant_id, task_id, plan, name, states)
                made = True
        return made

    async def _dependencies_succeeded(self, tx, key, plan, name, states):
        """Whether every dependency of step ``name`` has succeeded (reading the states missing
        from ``states``).  The dependencies are looked at from the one found unfinished last
        time (``_blockers``, per process), in chunks that double: in a fan-in of n steps a
        finish reads O(1) rows, all of them n in all (not n²)."""
        deps = plan.dag.steps[name].depends_on
        memo = (*key, name)
        start, looked, chunk = self._blockers.get(memo, 0), 0, 1
        while looked < len(deps):
            part = [deps[(start + i) % len(deps)] for i in range(looked, min(looked + chunk, len(deps)))]
            await self._read_states(tx, key, plan, [d for d in part if d not in states], states)
            for i, dep in enumerate(part, start=looked):
                if states[dep]["status"] != "succeeded":
                    self._blockers[memo] = (start + i) % len(deps)
                    return False
            looked, chunk = looked + len(part), chunk * 2
        self._blockers.pop(memo, None)
        return True

    async def _make_ready(self, writes, tenant_id, task_id, plan, name, states):
        """Make a step ready with its input: the current one, or a new version built from the
        upstream output versions in force (the 'pinned' versions)."""
        row = states[name]
        version = row["input_version"]
        if version is None or row["input_stale"]:
            upstream, lineage = {}, {}
            for dep in plan.dag.steps[name].depends_on:
                lineage[dep] = states[dep]["output_version"]
                upstream[dep] = await writes.output(tenant_id, task_id, dep, lineage[dep])
            version = (version or 0) + 1
            writes.artifact(tenant_id, task_id, name, "input", version, {"params": plan.params, "upstream": upstream},
                            "engine", lineage)
        writes.ready(tenant_id, row["id"], version)
        row.update(ready_at=writes.now, input_version=version, input_stale=0)

    def _cache(self, kind, key, content):
        (self._inputs if kind == "input" else self._outputs)[key] = content

    async def _settle(self, tx, statuses, now):
        """End the tasks of ``statuses`` ({(tenant_id, task_id): status}) that can make no more
        progress (no step running or ready): succeeded, or failed with the errors of their
        failed steps.  By counters (task_progress: a few index look-ups per task, after this
        transaction's writes), not by reading every step."""
        if not statuses:
            return
        for r in await tx.fetch_all("task_progress", task_ids=sorted({k[1] for k in statuses}),
                                    tenant_ids=sorted({k[0] for k in statuses})):
            key = (r["tenant_id"], r["task_id"])
            if key not in statuses or r["has_running"] or r["has_ready"]:
                continue
            ids = dict(tenant_id=key[0], task_id=key[1])
            if not r["has_unsucceeded"]:
                tx.defer("set_task_status", status="succeeded", error=None, finished_at=now, now=now,
                         from_status=statuses[key], **ids)
            elif r["has_failed"]:
                position = (await self.plan(tx, *key)).dag.position
                failed = sorted(await tx.fetch_all("failed_steps", **ids), key=lambda f: position[f["step_name"]])
                error = "; ".join(f"step {f['step_name']!r} failed: {f['error']}" for f in failed)
                tx.defer("skip_waiting_steps", now=now, **ids)
                tx.defer("set_task_status", status="failed", error=error, finished_at=now, now=now,
                         from_status=statuses[key], **ids)
            else:
                continue
            self.forget(*key)
