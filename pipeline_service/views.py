"""The shapes the API returns (README, API reference): plain, JSON-serialisable dicts."""
from .dag import parse_depends_on
from .ids import iso
from .json_objects import from_json
from .priority import DEFAULT_PRIORITY


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
        # a task made before priorities has none stored: it is queued as the default
        "priority": DEFAULT_PRIORITY if row.get("priority") is None else int(row["priority"]),
        # the schedule that created it, and the tick it was created for (None: submitted)
        "schedule_id": row.get("schedule_id"), "scheduled_for": iso(row.get("scheduled_for")),
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


def schedule_view(row, runs=()):
    """A schedule as the API returns it; ``runs``: rows of its last tasks, newest tick first."""
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "pipeline_id": row["pipeline_id"],
        "owner_id": row["owner_id"], "title": row["title"], "params": from_json(row["params"]),
        "cron": row["cron"], "every": row["every_seconds"], "at": iso(row["at_time"]),
        "timezone": row["timezone"], "overlap": row["overlap"], "catch_up": row["catch_up"],
        "priority": DEFAULT_PRIORITY if row["priority"] is None else int(row["priority"]),
        "status": str(row["status"]), "next_fire_at": iso(row["next_fire_at"]),
        "last_task_id": row["last_task_id"], "last_fired_at": iso(row["last_fired_at"]),
        "queued_tick": iso(row.get("queued_tick")),
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "runs": [{"task_id": r["id"], "status": str(r["status"]), "scheduled_for": iso(r["scheduled_for"]),
                  "created_at": iso(r["created_at"]), "finished_at": iso(r["finished_at"])} for r in runs],
    }
