"""Steps that wait (status ``waiting``): recording a handler's ``Wait``, waking what is due,
and what a woken step's handler is told.  The signal that wakes a step is a human control
(``control.Control.signal``); a child task's end wakes its parent's step (``Progress.wake_parent``).

How a step waits (docs/ARCHITECTURE.md, flow 7):

* its handler returns a ``waits.Wait``; the recorder records it like any outcome (fenced by
  the claim): the step is ``waiting``, without owner or lease, its ``ready_at`` the wait's
  deadline (NULL: none), ``waiting_for`` what it waits for.  A task wait submits its child
  task in that same transaction, so a child exists exactly when its parent's step waits;
* the executor's probe (one statement per poll, as before) also says whether a waiting step
  is due; ``wake_due`` then makes the due ones pending under their tasks' locks (ready in a
  running task, held in a paused one) and the ordinary claim runs their handlers again;
* a signal wakes its step at once, under the task's lock; a child task's end marks its
  parent's step due (``wake_parent_step``), written under the child's lock only: the parent's
  task row is never locked by a child's change.  A change of the parent (pause, resume,
  cancel) reaches its children in its own transaction, which locks the parent and its
  unfinished descendants together, in id order, before it writes (engine/control.py) — so
  no two transactions wait for each other's tasks in a cycle.
"""
from dataclasses import dataclass

from ..dag import Dag
from ..exceptions import InvalidInputError
from ..json_objects import from_json, to_json
from ..priority import DEFAULT_PRIORITY
from ..status import ACTIVE_TASK_STATUSES, StepStatus, TERMINAL_TASK_STATUSES
from ..waits import Wait
from .caches import EngineCaches
from .inputs import read_outputs
from .plans import Plans
from .progress import Progress
from .records import NewTask

# tasks in one chain of delegations at most (the top task included): a child that would be
# deeper is refused, as is a child of a pipeline already running above it (a cycle)
MAX_DELEGATION_DEPTH = 5
WAKE_BATCH = 100  # due waiting steps woken per transaction


@dataclass(frozen=True)
class WakeRound:
    """What one ``wake_due`` did: the steps it woke, and whether more may be due (it found as many
    as it takes at once, and woke some: the executor probes again without waiting for its poll
    interval)."""

    woken: int
    more: bool


class Waiting:
    def __init__(self, storage, plans: Plans, progress: Progress, caches: EngineCaches, tasks) -> None:
        self.storage = storage
        self.plans = plans
        self.progress = progress
        self.caches = caches
        self.tasks = tasks  # submits a task wait's child, in the transaction that records the wait

    async def record(self, tx, claim, wait: Wait, now: int) -> dict:
        """Record (deferred in ``tx``) that the claimed step waits, its claim fenced already;
        what it waits for, as stored.  A task wait's child is submitted here; a child that
        cannot be (no such pipeline, too deep, a cycle) raises a PipelineError before anything
        is written: the caller fails the step with it."""
        child = await self._submit_child(tx, claim, wait) if wait.submits else None
        stored = wait.stored(child)
        tx.defer("wait_step", id=claim.id, ready_at=wait.until, waiting_for=to_json(stored),
                 attempt=claim.attempt, owner=claim.owner, now=now)
        return stored

    async def _submit_child(self, tx, claim, wait):
        chain = []  # the delegating tasks, from this one up to the top
        task_id = claim.task_id
        while task_id is not None and len(chain) <= MAX_DELEGATION_DEPTH:
            row = await tx.fetch_one("task_lineage", tenant_id=claim.tenant_id, task_id=task_id)
            if row is None:
                break
            chain.append(row)
            task_id = row["parent_task_id"]
        above = [r["pipeline_id"] for r in reversed(chain)]
        if wait.pipeline_id in above:
            raise InvalidInputError(
                f"delegation cycle: pipeline {wait.pipeline_id!r} already runs above step {claim.step_name!r} "
                f"({' -> '.join(above + [wait.pipeline_id])}); a delegate step may not start a pipeline "
                "that delegated to it")
        if len(chain) >= MAX_DELEGATION_DEPTH:
            raise InvalidInputError(
                f"delegation too deep: task {claim.task_id!r} is already {len(chain)} tasks deep "
                f"({' -> '.join(above)}); at most {MAX_DELEGATION_DEPTH} tasks form one chain of delegations")
        title = wait.title if wait.title is not None else f"{claim.step_name} of {claim.task_id}"
        priority = chain[0]["priority"]  # its parent's place in the tenant's queue
        row = await self.tasks.write_task(tx, NewTask(
            claim.tenant_id, wait.pipeline_id, chain[0]["owner_id"], title, wait.params or {},
            DEFAULT_PRIORITY if priority is None else int(priority), parent=(claim.task_id, claim.step_name)))
        return row["id"]

    async def wake_due(self, now: int, limit: int = WAKE_BATCH) -> WakeRound:
        """Make the first ``limit`` waiting steps whose time has come pending again (ready in a
        running task, held in a paused one).  Any process may: waking runs no handler."""
        rows = await self.storage.probe("due_waiting_steps", now=now, limit=limit)
        if not rows:
            return WakeRound(0, False)
        woken = await self.storage.atomic(lambda tx: self._wake(tx, rows, now))
        # more only if this batch made progress: rows found due that cannot be woken (changed since
        # the look, or a step without its task) must not have the executor probe again and again
        return WakeRound(woken, len(rows) == limit and woken > 0)

    async def _wake(self, tx, rows, now):
        wanted = {}
        for r in rows:
            wanted.setdefault((r["tenant_id"], r["task_id"]), []).append(r["step_name"])
        locked = await self.progress.lock_states(tx, wanted)
        writes = self.progress.writes(tx, now)
        woken = 0
        for key, names in wanted.items():
            states, task_status = locked.get(key, ({}, None))
            due = [states[n] for n in names if n in states and states[n]["status"] == StepStatus.WAITING
                   and states[n]["ready_at"] is not None and states[n]["ready_at"] <= now]
            if due:
                wake(writes, key[0], due, task_status, None)
                woken += len(due)
        writes.flush()
        return woken

    async def waited(self, claim) -> dict:
        """What a woken step's handler is told (``input["waited"]``, see waits.py)."""
        waiting_for = from_json(claim.waiting_for)
        told = {"for": waiting_for, "woken_by": from_json(claim.woken_by) if claim.woken_by else None}
        if waiting_for.get("kind") == "task":
            told["child"] = await self.storage.atomic(
                lambda tx: self._child(tx, claim.tenant_id, waiting_for["child_task_id"]))
        return told

    async def _child(self, tx, tenant_id, task_id):
        """A child task as its parent's step sees it: status, error, and once it has ended the
        outputs of its sink steps (those no step depends on)."""
        row = await tx.fetch_one("task_lineage", tenant_id=tenant_id, task_id=task_id)
        if row is None:
            return {"task_id": task_id, "status": None, "error": f"task {task_id!r} does not exist", "outputs": {}}
        outputs = {}
        if row["status"] in TERMINAL_TASK_STATUSES:
            rows = await tx.fetch_all("get_steps", tenant_id=tenant_id, task_id=task_id)
            dag = Dag.from_rows(rows, f"task {task_id!r}")  # read, not cached: the task has ended
            steps = {r["step_name"]: r for r in rows}
            sinks = {name: steps[name]["output_version"] for name in dag.order
                     if not dag.successors[name] and steps[name]["output_version"] is not None}
            # as every output is read (a long one is stored compressed), in one statement
            texts = await read_outputs(tx, tenant_id, task_id, sinks)
            outputs = {name: from_json(texts[name]) for name in sinks}
        return {"task_id": task_id, "status": str(row["status"]), "error": row["error"], "outputs": outputs}


def wake(writes, tenant_id, rows, task_status, woken_by):
    """Make waiting steps (locked ``rows``, changed in place) pending: ready in their task's place in
    the queue if it runs, held if it is paused (resume makes them ready); ``woken_by``: what woke them."""
    writes.tx.defer("wake_steps", ids=[r["id"] for r in rows], tenant_id=tenant_id,
                    woken_by=None if woken_by is None else to_json(woken_by), now=writes.now)
    for row in rows:
        row.update(status=StepStatus.PENDING, ready_at=None)
        if task_status in ACTIVE_TASK_STATUSES:
            writes.ready(tenant_id, row["id"], row["input_version"])
            row.update(ready_at=writes.now)
