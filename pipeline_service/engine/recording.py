"""Recording what happened to claimed steps: outcomes (a group commit), lease heartbeats,
hand-backs at a graceful stop, and recovery of steps whose worker died.

Every write of an outcome is fenced by its claim (still running, same attempt and
owner, checked on the locked rows): a late result of a run whose claim was taken
away changes nothing, and each output version is stored exactly once.
"""
from ..exceptions import InvalidInputError, NotFoundError, StorageError
from ..ids import now_ms
from .inputs import materialise, read_output_texts, recipe_of
from ..status import ACTIVE_TASK_STATUSES as ACTIVE, StepStatus, TaskStatus
from .caches import ArtifactKey, EngineCaches
from .events import Events
from .plans import Plans
from .progress import Progress
from .records import Claim, InputRecipe, Outcome, StartedStep
from .waiting import Waiting

LOST_WORKER = "lost its worker (the process died or stalled mid-step); run again"  # a recovery's step.retrying


def run_attempt(step) -> int:
    """The attempt a locked step row is on, counted within its current run (as Claim.run_attempt)."""
    return int(step["attempt"]) - int(step["attempt_base"])


class Recorder:
    def __init__(self, storage, plans: Plans, progress: Progress, caches: EngineCaches, events: Events,
                 waiting: Waiting) -> None:
        self.storage = storage
        self.waiting = waiting  # records waits; what a woken step is told
        self.plans = plans
        self.progress = progress
        self.caches = caches
        self.events = events  # step.succeeded, step.retrying, step.failed: at commit

    async def start_steps(self, claims) -> dict[Claim, StartedStep]:
        """What each claimed step of a claim round runs with: its definition and its full input,
        made from what was stored when it became ready (engine/inputs.py): the task's params and
        the upstream outputs it names (a step woken from a wait gets ``input["waited"]`` from
        ``with_waited``, when it runs).  From the caches; what they miss is read for all the
        claims at once, in one transaction (a wide task makes thousands of steps ready at once,
        more than the caches keep: a read per step cost a transaction per step)."""
        started, missing = {}, []
        for claim in claims:
            recipe = self.caches.inputs.pop(_input_key(claim), None)
            made = self._from_caches(claim, recipe)
            if made is None:
                missing.append((claim, recipe))
            else:
                started[claim] = made
        if missing:
            started.update(await self.storage.atomic(lambda tx: self._read_starts(tx, missing)))
        return started

    async def with_waited(self, claim, started: StartedStep) -> StartedStep:
        """A woken step's StartedStep with what it waited for (``input["waited"]``, waits.py)."""
        if claim.waiting_for is None:
            return started
        return StartedStep(started.step, {**started.input, "waited": await self.waiting.waited(claim)})

    def _from_caches(self, claim, recipe) -> StartedStep | None:
        """The claim's StartedStep if its plan, its input's recipe and the outputs it names are cached."""
        plan = self.plans.cached(claim.tenant_id, claim.task_id)
        if plan is None or recipe is None:
            return None
        outputs = {}
        for dep, version in (recipe.lineage or {}).items():
            text = self.caches.outputs.get((claim.tenant_id, claim.task_id, dep, version))
            if text is None:
                return None
            outputs[dep] = text
        return StartedStep(plan.dag.steps[claim.step_name], materialise(recipe, plan.params_text, outputs))

    async def _read_starts(self, tx, missing) -> dict[Claim, StartedStep]:
        """The StartedSteps of ``missing`` ([(claim, its cached recipe or None)]): the input rows
        not cached read in one statement, then the upstream outputs not cached in another."""
        recipes = await self._recipes(tx, missing)
        texts = await self._output_texts(tx, recipes)
        started = {}
        for claim, recipe in recipes.items():
            outputs = {dep: texts[(claim.tenant_id, claim.task_id, dep, version)]
                       for dep, version in (recipe.lineage or {}).items()}
            plan = await self.plans.get(tx, claim.tenant_id, claim.task_id)
            started[claim] = StartedStep(plan.dag.steps[claim.step_name], materialise(recipe, plan.params_text, outputs))
        return started

    @staticmethod
    async def _recipes(tx, missing) -> dict[Claim, InputRecipe]:
        unknown = [claim for claim, recipe in missing if recipe is None]
        rows = await tx.fetch_union("get_artifact", [dict(
            tenant_id=c.tenant_id, task_id=c.task_id, step_name=c.step_name, kind="input", version=c.input_version)
            for c in unknown]) if unknown else []
        read = {(r["tenant_id"], r["task_id"], r["step_name"], int(r["version"])): recipe_of(r) for r in rows}
        lost = [c.step_name for c in unknown if _input_key(c) not in read]
        if lost:  # a claim's input_version names a row written with it: this is a broken database
            raise StorageError(f"the inputs of the claimed steps {lost} are not stored")
        return {claim: recipe if recipe is not None else read[_input_key(claim)] for claim, recipe in missing}

    async def _output_texts(self, tx, recipes: dict[Claim, InputRecipe]) -> dict[ArtifactKey, str]:
        """The JSON text of every upstream output the ``recipes`` name: cached, or read in one statement."""
        wanted = {(c.tenant_id, c.task_id, dep, version) for c, recipe in recipes.items()
                  for dep, version in (recipe.lineage or {}).items()}
        return await read_output_texts(tx, wanted, {key: text for key in wanted
                                                    if (text := self.caches.outputs.get(key)) is not None})

    async def finish(self, outcomes):
        """Record the outcomes of finished attempts, all in one transaction (a group commit);
        returns, per outcome, whether it was recorded (False: its claim had been taken away).
        Successes store their output and make the successors ready with their inputs;
        failures with a retry delay go back to the queue; final failures fail the step."""
        return await self.storage.atomic(lambda tx: self._write_outcomes(tx, outcomes), fenced=True)

    async def _write_outcomes(self, tx, outcomes):
        now = now_ms()
        touched = await self.progress.touched(tx, outcomes)
        locked = await self.progress.lock_states(tx, touched)
        writes = self.progress.writes(tx, now)
        recorded, succeeded, changed = [], {}, {}  # succeeded: {new output version: step ids}
        for o in outcomes:
            c, key = o.claim, (o.claim.tenant_id, o.claim.task_id)
            states, task_status = locked.get(key, ({}, None))
            row = states.get(c.step_name)
            if row is None or (row["status"], row["attempt"], row["owner"]) != (
                    StepStatus.RUNNING, c.attempt, c.owner):
                recorded.append(False)  # the claim was taken away: the result is discarded
                continue
            recorded.append(True)
            if o.wait is not None:
                try:
                    waiting_for = await self.waiting.record(tx, c, o.wait, now)
                except (InvalidInputError, NotFoundError) as exc:  # its child task cannot be submitted: the step
                    o = Outcome(c, error=str(exc))  # fails with why (below)
                else:
                    row.update(status=StepStatus.WAITING)
                    self.events.at_commit(tx, "step.waiting", *key, step_name=c.step_name, attempt=c.run_attempt,
                                          waiting_for=waiting_for)
                    continue
            if o.succeeded:
                version = (row["output_version"] or 0) + 1
                writes.artifact(c.tenant_id, c.task_id, c.step_name, "output", version, None, "engine",
                                {"input_version": c.input_version}, o.output_stored, o.output_text)
                succeeded.setdefault(version, []).append(c.id)
                row.update(status=StepStatus.SUCCEEDED, output_version=version)
                changed.setdefault(key, []).append(c.step_name)
                self.events.at_commit(tx, "step.succeeded", *key, step_name=c.step_name, attempt=c.run_attempt,
                                      output_version=version)
            elif o.retry_delay is not None:
                # a paused task holds the step: resume makes it ready again
                ready_at = now + int(o.retry_delay * 1000) if task_status in ACTIVE else None
                tx.defer("requeue_step", id=c.id, ready_at=ready_at, error=o.error, error_trace=o.trace,
                         attempt=c.attempt, owner=c.owner, now=now)
                row.update(status=StepStatus.PENDING, ready_at=ready_at)
                if ready_at is not None:  # claimed here without waiting for a refresh of the tenant list
                    tx.on_commit(lambda tenant=c.tenant_id: self.caches.ready_tenants.add(tenant))
                self.events.at_commit(tx, "step.retrying", *key, step_name=c.step_name, attempt=c.run_attempt,
                                      error=o.error, traceback=o.trace, retry_delay=o.retry_delay)
            else:
                tx.defer("fail_step", id=c.id, error=o.error, error_trace=o.trace, attempt=c.attempt,
                         owner=c.owner, now=now)
                row.update(status=StepStatus.FAILED, error=o.error)
                changed.setdefault(key, [])
                self.events.at_commit(tx, "step.failed", *key, step_name=c.step_name, attempt=c.run_attempt,
                                      error=o.error, traceback=o.trace)
        for version, ids in succeeded.items():  # checked running on the locked rows above
            tx.defer("succeed_steps", ids=ids, output_version=version, now=now)
        unsettled = {}  # running tasks in which nothing was made ready: they may have ended
        for key, finished in changed.items():
            states, task_status = locked[key]
            if task_status == TaskStatus.RUNNING and not await self.progress.advance(writes, *key, states, finished):
                unsettled[key] = task_status
        writes.flush()
        whole = {key: locked[key][0] for key in unsettled if touched[key] is None}  # all its steps were read
        await self.progress.settle(tx, unsettled, now, whole)
        return recorded

    async def heartbeat(self, owner, lease_ms, claims):
        """Extend the leases of ``claims`` (the ones running here, and only those); return
        those the owner no longer holds (same step and attempt, still running)."""
        ids = sorted({c.id for c in claims})
        await self.storage.atomic(lambda tx: self._extend_leases(tx, owner, ids, lease_ms), fenced=True)
        held = {(r["id"], int(r["attempt"]))
                for r in await self.storage.probe("owned_running_steps", owner=owner, ids=ids)}
        return [c for c in claims if (c.id, c.attempt) not in held]

    @staticmethod
    async def _extend_leases(tx, owner, ids, lease_ms):
        tx.defer("extend_leases", owner=owner, ids=ids, lease_expires_at=now_ms() + lease_ms)

    async def release(self, claims):
        """Hand back claims that will not be finished (a graceful stop): each step still held
        by its claim is ready again at once (held, if its task is paused), its attempt counted
        neither as a failure nor as a crash. Returns how many were handed back."""
        return await self.storage.atomic(lambda tx: self._release(tx, claims), fenced=True)

    async def _release(self, tx, claims):
        now = now_ms()
        wanted = {}  # task -> its steps handed back
        for c in claims:
            wanted.setdefault((c.tenant_id, c.task_id), []).append(c.step_name)
        locked = await self.progress.lock_states(tx, wanted)
        released = 0
        for c in claims:
            task_status = locked.get((c.tenant_id, c.task_id), ({}, None))[1]
            ready_at = now if task_status in ACTIVE else None
            released += await tx.execute("release_step", id=c.id, attempt=c.attempt, owner=c.owner,
                                         ready_at=ready_at, now=now)
        tx.on_commit(lambda: self.caches.ready_tenants.update(c.tenant_id for c in claims))
        return released

    async def recover_expired(self, now, max_crashes, limit=100):
        """Take back running steps whose lease expired (their worker died): run them again,
        or fail them once they have lost their worker ``max_crashes`` times."""
        recovered = 0
        for row in await self.storage.probe("expired_steps", now=now, limit=limit):
            recovered += await self.storage.atomic(lambda tx, row=row: self._recover(tx, row, now, max_crashes))
        return recovered

    async def _recover(self, tx, row, now, max_crashes):
        key = (row["tenant_id"], row["task_id"])
        states, task_status = (await self.progress.lock_states(tx, {key: [row["step_name"]]})).get(key, ({}, None))
        step = states.get(row["step_name"])
        if step is None or step["status"] != StepStatus.RUNNING:
            return 0
        crashes = step["crash_count"] + 1  # computed here only: the statements store it as is
        if crashes >= max_crashes:
            error = f"lost its worker {crashes} times (the process died or stalled mid-step); not run again"
            if await tx.execute("fail_lost_step", id=row["id"], error=error, crash_count=crashes, now=now) != 1:
                return 0
            self.events.at_commit(tx, "step.failed", *key, step_name=row["step_name"], attempt=run_attempt(step),
                                  error=error, traceback=None)
            if task_status in ACTIVE:  # pending: it died before the task started
                await self.progress.settle(tx, {key: task_status}, now)
            return 1
        ready_at = now if task_status in ACTIVE else None
        recovered = await tx.execute("recover_step", id=row["id"], ready_at=ready_at, crash_count=crashes, now=now)
        if recovered:
            self.events.at_commit(tx, "step.retrying", *key, step_name=row["step_name"], attempt=run_attempt(step),
                                  error=LOST_WORKER, traceback=None, retry_delay=0)
        return recovered


def _input_key(claim: Claim) -> ArtifactKey:
    """The key of the claim's input in caches.inputs (and of its row)."""
    return (claim.tenant_id, claim.task_id, claim.step_name, claim.input_version)
