"""What people read: a tenant's tasks, a task with its steps, a step with its versions."""
from ..dag import Dag
from ..exceptions import NotFoundError
from ..ids import iso
from ..json_objects import from_json
from ..store.packing import text_of
from .inputs import materialise, read_outputs, recipe_of
from ..views import step_view, task_summary


class Reads:
    def __init__(self, storage) -> None:
        self.storage = storage

    async def list_tasks(self, tenant_id, pipeline_id, status, page, rows):
        return await self.storage.atomic(lambda tx: self._list(tx, tenant_id, pipeline_id, status, page, rows))

    async def _list(self, tx, tenant_id, pipeline_id, status, page, rows):
        filters = dict(tenant_id=tenant_id, pipeline_id=pipeline_id, status=status)
        total = (await tx.fetch_one("count_tasks", **filters))["n"]
        found = await tx.fetch_all("list_tasks", limit=rows, offset=(page - 1) * rows, **filters)
        return {"total": int(total), "rows": [task_summary(r) for r in found]}

    async def task_detail(self, tenant_id, task_id):
        task, steps, children = await self.storage.atomic(lambda tx: self._read_task(tx, tenant_id, task_id))
        dag = Dag.from_rows(steps, f"task {task_id!r}")
        by_name = {s["step_name"]: s for s in steps}
        detail = task_summary(task)
        detail["params"] = from_json(task["params"])
        detail["steps"] = [step_view(by_name[name]) for name in dag.order]
        # the delegations it is part of (engine/waiting.py): who delegated it, whom its steps delegated
        detail["parent"] = ({"task_id": task["parent_task_id"], "step_name": task["parent_step"]}
                            if task["parent_task_id"] else None)
        detail["children"] = [{"task_id": c["id"], "step_name": c["parent_step"], "status": str(c["status"])}
                              for c in children]
        return detail

    async def _read_task(self, tx, tenant_id, task_id):
        task = await self._task(tx, tenant_id, task_id)
        return (task, await tx.fetch_all("get_steps", tenant_id=tenant_id, task_id=task_id),
                await tx.fetch_all("task_children", tenant_id=tenant_id, task_id=task_id))

    async def node(self, tenant_id, task_id, step_name, version, input_version=None):
        step, chosen, output, input_, versions = await self.storage.atomic(
            lambda tx: self._read_node(tx, tenant_id, task_id, step_name, version, input_version))
        return {
            "step": step_view(step),
            "version": chosen,
            "input": input_[1] if input_ else None,
            "input_version": input_[0] if input_ else None,
            "output": from_json(text_of(output)) if output else None,
            # each version's lineage: an output's {"input_version"}, an input's {dependency: output version}
            "versions": [{"kind": v["kind"], "version": v["version"], "source": v["source"],
                          "lineage": from_json(v["lineage"]) if v["lineage"] else None,
                          "created_at": iso(v["created_at"])} for v in versions],
        }

    async def _read_node(self, tx, tenant_id, task_id, step_name, version, wanted_input=None):
        """The step, the output version shown, its row, (the input version shown — ``wanted_input``,
        else the one that made that output —, that input in full: made from its references, see
        engine/inputs.py), and the versions."""
        task = await self._task(tx, tenant_id, task_id)
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
        if wanted_input is not None:
            if wanted_input not in [v["version"] for v in versions if v["kind"] == "input"]:
                raise NotFoundError(f"step {step_name!r} of task {task_id!r} has no input version {wanted_input}")
            input_version = wanted_input
        if input_version is not None:
            row = await tx.fetch_one("get_artifact", tenant_id=tenant_id, task_id=task_id,
                                     step_name=step_name, kind="input", version=input_version)
            if row is not None:
                recipe = recipe_of(row)
                outputs = await read_outputs(tx, tenant_id, task_id, recipe.lineage) if recipe.lineage else {}
                input_ = (row["version"], materialise(recipe, task["params"], outputs))
        return step, chosen, output, input_, versions

    @staticmethod
    async def _task(tx, tenant_id, task_id):
        return await tx.fetch_existing("get_task", f"task {task_id!r}", tenant_id=tenant_id, task_id=task_id)
