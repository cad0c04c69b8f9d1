"""The shapes the API returns (README, API reference): plain, JSON-serialisable dicts."""
from .dag import parse_depends_on
from .ids import iso
from .json_objects import from_json


def task_summary(row):
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "pipeline_id": row["pipeline_id"],
        "owner_id": row["owner_id"], "title": row["title"], "status": str(row["status"]),  # a plain str, not the enum
        "error": row["error"],
        "progress": {"total": int(row["n_total"]), "succeeded": int(row["n_succeeded"]),
                     "running": int(row["n_running"]), "waiting": int(row["n_waiting"]),
                     "failed": int(row["n_failed"]), "skipped": int(row["n_skipped"])},
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "started_at": iso(row["started_at"]), "finished_at": iso(row["finished_at"]),
    }


def step_view(row):
    return {
        "step_name": row["step_name"], "step_type": row["step_type"],
        "depends_on": list(parse_depends_on(row["depends_on"], row["step_name"])),
        "status": row["status"], "attempt": int(row["attempt"]) - int(row["attempt_base"]),
        "input_version": row["input_version"], "output_version": row["output_version"],
        "error": row["error"], "started_at": iso(row["started_at"]), "finished_at": iso(row["finished_at"]),
        # the last failed attempt's traceback (its innermost frames), until the step succeeds or is re-run
        "traceback": row["error_trace"],
        # what the step waits for, or waited for last (waits.Wait.stored: a delegate step's child task)
        "waiting_for": from_json(row["waiting_for"]) if row.get("waiting_for") else None,
    }

