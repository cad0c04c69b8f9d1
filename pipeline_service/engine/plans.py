"""A task's plan (its DAG, params and step ids): from the cache, or read once."""
from ..dag import Dag
from .caches import EngineCaches
from .records import TaskPlan


class Plans:
    def __init__(self, caches: EngineCaches) -> None:
        self.caches = caches

    def cached(self, tenant_id: str, task_id: str):
        return self.caches.plans.get((tenant_id, task_id))

    async def get(self, tx, tenant_id: str, task_id: str) -> TaskPlan:
        plan = self.caches.plans.get((tenant_id, task_id))
        if plan is None:
            rows = await tx.fetch_all("get_steps", tenant_id=tenant_id, task_id=task_id)
            task = await tx.fetch_one("task_state", tenant_id=tenant_id, task_id=task_id)
            parent = (task["parent_task_id"], task["parent_step"]) if task["parent_task_id"] else None
            plan = TaskPlan(Dag.from_rows(rows, f"task {task_id!r}"), {r["step_name"]: r["id"] for r in rows},
                            task["params"], parent)
            # immutable and read from committed rows: safe to keep at once
            self.caches.remember_plan((tenant_id, task_id), plan)
        return plan

    def forget_at_commit(self, tx, tenant_id: str, task_id: str) -> None:
        """The task has ended: its plan is dropped once that is committed."""
        tx.on_commit(lambda: self.caches.forget_plan((tenant_id, task_id)))
