"""Pipelines and tasks coming into being: defining a pipeline, submitting a task."""
from ..dag import Dag, check_timeouts
from ..exceptions import DuplicateKeyError, HandlerError, InvalidInputError, InvalidStateError, NotFoundError
from ..ids import new_id, now_ms
from ..json_objects import to_json
from ..status import StepStatus, TaskStatus
from ..views import task_summary
from .caches import EngineCaches
from .events import Events
from .preparing import prepare
from .progress import Progress
from .records import NewTask, TaskPlan
from .writes import check_writable
from ..store.packing import as_text


class Tasks:
    def __init__(self, storage, caches: EngineCaches, progress: Progress, handlers, events: Events) -> None:
        self.storage = storage
        self.caches = caches
        self.progress = progress
        self.handlers = handlers  # the service's handler registry: submit refuses types it cannot run
        self.events = events  # task.submitted: at commit

    async def define_pipeline(self, pipeline_id, steps, name=None, description=None):
        """Create or replace a pipeline definition (rows of pipelines / pipeline_steps);
        ``steps`` are checked rows (``dag.definition_rows``)."""
        rows = [dict(row, id=new_id(), pipeline_id=pipeline_id) for row in steps]
        await self.storage.atomic(lambda tx: self._write_definition(tx, pipeline_id, rows, name, description))
        return {"id": pipeline_id, "steps": [r["step_name"] for r in rows]}

    async def _write_definition(self, tx, pipeline_id, rows, name, description):
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
        tx.on_commit(lambda: self.caches.definitions.pop(pipeline_id, None))

    async def submit(self, new: NewTask, require_handlers=True):
        """Create the task; with an idempotency key, the task the key already names if there is one
        (the unique key (tenant_id, idempotency_key) decides, not the read before the write)."""
        if new.idempotency_key is None:
            return task_summary(await self.storage.atomic(lambda tx: self.write_task(tx, new, require_handlers)))
        try:
            row = await self.storage.atomic(lambda tx: self._submit_once(tx, new, require_handlers))
        except DuplicateKeyError:  # a submit with the same key committed while this one was writing
            row = await self.storage.atomic(lambda tx: self._submit_once(tx, new, require_handlers))
        return task_summary(row)

    async def _submit_once(self, tx, new: NewTask, require_handlers):
        row = await tx.fetch_one("task_by_key", tenant_id=new.tenant_id, idempotency_key=new.idempotency_key)
        if row is None:
            return await self.write_task(tx, new, require_handlers)
        if row["pipeline_id"] != new.pipeline_id:
            raise InvalidStateError(f"idempotency_key {new.idempotency_key!r} already names task {row['id']!r} "
                                    f"of pipeline {row['pipeline_id']!r}, not of {new.pipeline_id!r}")
        return row

    async def write_task(self, tx, new: NewTask, require_handlers=True):
        """Write a new task in ``tx`` (a submit's, or a schedule's tick's, which advances the
        schedule in the same transaction, or a delegate step's child, written with its parent's wait:
        ``new.parent``, engine/waiting.py); its row as ``task_summary`` reads it.  Everything is
        checked before anything is written: a refusal leaves ``tx`` as it was."""
        task_id, now = new_id(), now_ms()
        tenant_id, pipeline_id, owner_id, title = new.tenant_id, new.pipeline_id, new.owner_id, new.title
        params_text = to_json(new.params)  # the task's own copy (its text): a caller reusing its dict changes nothing
        dag = await self.definition(tx, pipeline_id)
        missing = [(s.name, s.step_type) for s in dag.steps.values() if self.handlers.get(s.step_type) is None]
        if missing and require_handlers:
            # a built-in step type this host has not enabled says how to enable it
            off = [f"step {n!r}: {self.handlers.off(t)}" for n, t in missing if self.handlers.off(t)]
            unknown = [(n, t) for n, t in missing if not self.handlers.off(t)]
            raise HandlerError("; ".join(off + ([
                "no handler is registered for " + ", ".join(f"step_type {t!r} (step {n!r})" for n, t in unknown)
                + "; register one with this service's register_handler()"] if unknown else [])))
        if require_handlers:  # each timeout within its type's bound now (a handler may have changed since define)
            check_timeouts(dag.steps.values(), self.handlers.waits)
        check_writable(as_text(params_text), tx.max_write_bytes, "params")
        tx.defer("insert_task", id=task_id, tenant_id=tenant_id, pipeline_id=pipeline_id,
                 owner_id=owner_id, title=title, params=params_text, status=TaskStatus.PENDING, now=now,
                 priority=new.priority, idempotency_key=new.idempotency_key, schedule_id=new.schedule_id,
                 scheduled_for=new.scheduled_for)
        roots = dag.roots()  # ready at once, with their inputs by reference (unless their `when` is false)
        parent = new.parent
        if parent is not None:
            tx.defer("set_task_parent", tenant_id=tenant_id, task_id=task_id, parent_task_id=parent[0],
                     parent_step=parent[1])
        ids = {name: new_id() for name in dag.order}
        plan = TaskPlan(dag, ids, params_text, parent)
        writes = self.progress.writes(tx, now)
        prepared = {name: prepare(dag.steps[name], new.params, {}) for name in roots}
        for name in roots:
            writes.input_by_reference(tenant_id, task_id, name, 1, {}, prepared[name].extra)
        runs = {name for name in roots if prepared[name].runs}
        writes.flush()
        tx.defer_many("insert_step", [dict(
            id=ids[name], tenant_id=tenant_id, task_id=task_id, step_name=name,
            step_type=dag.steps[name].step_type, depends_on=dag.steps[name].depends_on_text,
            config=dag.steps[name].config_text, seq=dag.steps[name].seq,
            input_version=1 if name in prepared else None, ready_at=now if name in runs else None, now=now,
            priority=new.priority)
            for name in dag.order])
        self.events.at_commit(tx, "task.submitted", tenant_id, task_id, pipeline_id=pipeline_id, owner_id=owner_id)
        status, skipped = TaskStatus.PENDING, 0
        if len(runs) < len(roots):
            states = {name: dict(id=ids[name], status=StepStatus.PENDING, ready_at=now if name in runs else None,
                                 input_version=1 if name in prepared else None, input_stale=0, output_version=None)
                      for name in dag.order}
            await self.progress.skip_at_submit(writes, (tenant_id, task_id), plan, states,
                                               [n for n in roots if n not in runs])
            if not runs:  # nothing to run: every step was skipped, the task has succeeded
                status = TaskStatus.SUCCEEDED
            skipped = sum(s["status"] == StepStatus.SKIPPED for s in states.values())
        if runs:
            tx.on_commit(lambda: self.caches.remember_plan((tenant_id, task_id), plan))
            tx.on_commit(lambda: self.caches.ready_tenants.add(tenant_id))
        return dict(id=task_id, tenant_id=tenant_id, pipeline_id=pipeline_id, owner_id=owner_id, title=title,
                    status=status, error=None, n_total=len(dag.order), n_succeeded=0, n_running=0,
                    n_waiting=0, n_failed=0, n_skipped=skipped, created_at=now, updated_at=now, started_at=None, finished_at=None,
                    priority=new.priority, schedule_id=new.schedule_id, scheduled_for=new.scheduled_for)

    async def definition(self, tx, pipeline_id) -> Dag:
        """The DAG of a pipeline as defined (cached for caches.DEFINITION_TTL_SECONDS: a read
        of committed rows, kept at once)."""
        dag = self.caches.definitions.get(pipeline_id)
        if dag is None:
            rows = [r for r in await tx.fetch_all("get_pipeline_definition", pipeline_id=pipeline_id)
                    if r["pipeline"] == pipeline_id]  # exactly this id, whatever the table's collation
            if not rows:
                raise NotFoundError(f"pipeline {pipeline_id!r} does not exist")
            dag = Dag.from_rows([r for r in rows if r["step_name"] is not None], f"pipeline {pipeline_id!r}")
            self.caches.definitions[pipeline_id] = dag
        return dag
