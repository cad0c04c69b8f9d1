"""The ``delegate`` step type (Hermes ``delegate_task``, Conductor SUB_WORKFLOW): a child task.

Config: ``pipeline_id``, ``params`` (an object, default ``{}``), ``title``.  The step submits a
child task of that pipeline for the same tenant and owner (in the transaction that records
its wait: engine/waiting.py) and waits without a slot until the child ends.  Output:
``{child_task_id, status, outputs: {sink step: its output}}``; a failed or cancelled child
fails the step.  Pausing, resuming or cancelling the parent does the same to the child;
``pipeline_detail`` of the parent lists its ``children``, of the child names its ``parent``.
Chains of delegations are at most ``engine.waiting.MAX_DELEGATION_DEPTH`` tasks deep, and a
pipeline never delegates to one already running above it (a cycle): both fail the step.
"""
from typing import Any

from ..exceptions import InvalidInputError, StepFailed
from ..waits import Wait, waiting_handler


@waiting_handler
async def run(tenant_id: str, task_id: str, step_name: str, input_data: dict[str, Any],
              config: dict[str, Any]) -> dict[str, Any] | Wait:
    waited = input_data.get("waited")
    if waited is None:  # starts its child (submitted when this wait is recorded)
        if "pipeline_id" not in config:
            raise InvalidInputError("delegate config needs 'pipeline_id', the pipeline of the child task")
        return Wait.task(config["pipeline_id"], config.get("params", {}), config.get("title"))
    child = waited["child"]
    if child["status"] == "succeeded":
        return {"child_task_id": child["task_id"], "status": child["status"], "outputs": child["outputs"]}
    if child["status"] in ("failed", "cancelled") or child["status"] is None:
        why = f": {child['error']}" if child.get("error") else ""
        raise StepFailed(f"child task {child['task_id']} {child['status'] or 'is gone'}{why}")
    return Wait.child(child["task_id"])  # looked at before it ended (its parent was resumed): wait on
