"""Retention: deleting a tenant's finished tasks, or the old artifact versions of its finished tasks.

A purge never touches a task that is not finished (succeeded, failed, cancelled): it
works in small batches of tasks, one short transaction each, which locks the batch's
task rows (the serialisation point of every state change, so a modify re-opening a
failed task waits, or finds it gone) and checks under that lock that each is still
finished.  Nothing else is held while it runs: the engine goes on.  A crash loses at
most the batch under way (rolled back); running the purge again finishes the work.

* ``older_than`` (days): finished tasks whose ``finished_at`` is older go whole — the
  task row, its step rows, all its artifacts.
* ``keep_versions`` (K ≥ 1): of every other finished task, each step keeps its newest K
  input and output versions, and whatever those name (the input an output was made
  from, the upstream outputs an input refers to: engine/inputs.py), so every version
  kept still reads in full; the older ones are deleted.

Which values apply when the caller gives none: the tenant's retention policy, else the
global one (the ``retention`` option, docs/OPERATIONS.md).
"""
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidInputError
from ..ids import check_id, now_ms
from ..json_objects import from_json

DEFAULT_BATCH = 20      # tasks per transaction: a few ms of locks each
MAX_BATCH = 1000
DELETE_CHUNK = 500      # artifact ids per DELETE statement
DAY_MS = 86_400_000
MAX_DAYS = 100 * 365
MAX_KEEP = 1_000_000


def check_older_than(value: object, what: str = "older_than") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DAYS:
        raise InvalidInputError(f"{what} must be a number of days from 0 to {MAX_DAYS:,}, or None, got {value!r:.40}")
    return float(value)


def check_keep_versions(value: object, what: str = "keep_versions") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEEP:
        raise InvalidInputError(f"{what} must be a whole number from 1 to {MAX_KEEP:,}, or None, got {value!r:.40}")
    return value


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished tasks are kept (days), and how many versions of each step's artifacts."""

    older_than: float | None = None
    keep_versions: int | None = None

    def over(self, fallback: "RetentionPolicy") -> "RetentionPolicy":
        """This policy, with ``fallback``'s value where this one has none."""
        return RetentionPolicy(fallback.older_than if self.older_than is None else self.older_than,
                               fallback.keep_versions if self.keep_versions is None else self.keep_versions)


@dataclass(frozen=True)
class Retention:
    """The global retention policy and the tenants' own (each overrides the global one field by field)."""

    default: RetentionPolicy = RetentionPolicy()
    tenants: dict[str, RetentionPolicy] | None = None

    def for_tenant(self, tenant_id: str) -> RetentionPolicy:
        return (self.tenants or {}).get(tenant_id, RetentionPolicy()).over(self.default)


def _policy(value: object, what: str) -> RetentionPolicy:
    if not isinstance(value, dict) or set(value) - {"older_than", "keep_versions"}:
        raise InvalidInputError(f"{what} must be an object with older_than (days) and/or keep_versions, "
                                f"got {value!r:.80}")
    return RetentionPolicy(check_older_than(value.get("older_than"), f"{what}.older_than"),
                           check_keep_versions(value.get("keep_versions"), f"{what}.keep_versions"))


def check_retention(value: object) -> Retention:
    """The ``retention`` option: ``{"older_than": days, "keep_versions": K, "tenants": {tenant:
    {"older_than": ..., "keep_versions": ...}}}`` (every key optional), a Retention, or None."""
    if value is None:
        return Retention()
    if isinstance(value, Retention):
        return value
    if not isinstance(value, dict):
        raise InvalidInputError(f"retention must be an object (older_than, keep_versions, tenants), got "
                                f"{type(value).__name__}")
    tenants = value.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise InvalidInputError("retention.tenants must be an object of tenant id -> policy")
    return Retention(_policy({k: v for k, v in value.items() if k != "tenants"}, "retention"),
                     {check_id(t, "a tenant id in retention.tenants"): _policy(p, f"retention.tenants.{t}")
                      for t, p in tenants.items()})


def superseded(rows: list[dict[str, Any]], keep: int) -> list[str]:
    """The ids of the artifact rows of one task (``task_artifact_versions``) that ``keep_versions``
    lets go: all but each step's newest ``keep`` inputs and outputs and what those name."""
    index = {(r["step_name"], r["kind"], int(r["version"])): r for r in rows}
    newest: dict[tuple[str, str], list[int]] = {}
    for step, kind, version in index:
        newest.setdefault((step, kind), []).append(version)
    kept = {(step, kind, v) for (step, kind), versions in newest.items() for v in sorted(versions)[-keep:]}
    queue = list(kept)
    while queue:
        step, kind, _ = key = queue.pop()
        lineage = from_json(index[key]["lineage"]) or {}
        if kind == "output":
            named = [(step, "input", lineage.get("input_version"))]
        else:
            named = [(dep, "output", v) for dep, v in lineage.items()]
        for ref in named:
            if ref[2] is not None and (ref[0], ref[1], int(ref[2])) in index:
                ref = (ref[0], ref[1], int(ref[2]))
                if ref not in kept:
                    kept.add(ref)
                    queue.append(ref)
    return [r["id"] for k, r in index.items() if k not in kept]


class Purger:
    def __init__(self, storage, retention: Retention) -> None:
        self.storage = storage
        self.retention = retention

    def policy(self, tenant_id: str, older_than: float | None, keep_versions: int | None) -> RetentionPolicy:
        """The values a purge of ``tenant_id`` uses: those given, else the tenant's policy, else the global one."""
        return RetentionPolicy(older_than, keep_versions).over(self.retention.for_tenant(tenant_id))

    async def purge(self, tenant_id: str, policy: RetentionPolicy, dry_run: bool,
                    batch: int = DEFAULT_BATCH) -> dict[str, Any]:
        done: dict[str, Any] = {"tenant_id": tenant_id, "dry_run": dry_run, "older_than": policy.older_than,
                                "keep_versions": policy.keep_versions, "tasks": [], "steps": 0, "artifacts": 0}
        if policy.older_than is not None:
            before = now_ms() - int(policy.older_than * DAY_MS)
            async for ids in self._pages(tenant_id, batch, finished_before=before, keep_versions=None):
                await self.storage.atomic(lambda tx, ids=ids: self._purge_tasks(tx, tenant_id, ids, dry_run, done))
        if policy.keep_versions is not None:
            keep = policy.keep_versions
            async for ids in self._pages(tenant_id, batch, finished_before=None, keep_versions=keep):
                ids = [i for i in ids if i not in done["tasks"]]  # a dry run's whole-task purge counted them
                if ids:
                        await self.storage.atomic(lambda tx, ids=ids: self._purge_versions(tx, tenant_id, ids, keep,
                                                                                       dry_run, done))
        return done

    async def _pages(self, tenant_id, batch, finished_before, keep_versions):
        """Pages of candidate task ids, in id order (read outside any transaction; checked again under lock)."""
        after = ""
        while True:
            rows = await self.storage.probe("purge_candidates", tenant_id=tenant_id, after=after, limit=batch,
                                            finished_before=finished_before, keep_versions=keep_versions)
            if not rows:
                return
            after = rows[-1]["id"]
            yield [r["id"] for r in rows]

    async def _finished(self, tx, tenant_id, ids):
        tx.defer("lock_tasks", task_ids=sorted(ids), tenant_ids=[tenant_id])
        return sorted(r["id"] for r in await tx.fetch_all("finished_tasks", tenant_id=tenant_id, task_ids=ids))

    async def _purge_tasks(self, tx, tenant_id, ids, dry_run, done):
        """Delete the tasks of ``ids`` still finished, whole; counts added to ``done`` at commit."""
        ids = await self._finished(tx, tenant_id, ids)
        if not ids:
            return
        if dry_run:
            artifacts = len(await tx.fetch_all("task_artifact_versions", tenant_id=tenant_id, task_ids=ids))
            steps = int((await tx.fetch_one("count_task_steps", tenant_id=tenant_id, task_ids=ids))["n"])
        else:
            artifacts = await tx.execute("delete_task_artifacts", tenant_id=tenant_id, task_ids=ids)
            steps = await tx.execute("delete_task_steps", tenant_id=tenant_id, task_ids=ids)
            await tx.execute("delete_tasks", tenant_id=tenant_id, task_ids=ids)
        tx.on_commit(lambda: _add(done, ids, steps, artifacts))

    async def _purge_versions(self, tx, tenant_id, ids, keep, dry_run, done):
        """Delete the superseded artifact versions of the tasks of ``ids`` still finished."""
        ids = await self._finished(tx, tenant_id, ids)
        if not ids:
            return
        by_task: dict[str, list] = {}
        for r in await tx.fetch_all("task_artifact_versions", tenant_id=tenant_id, task_ids=ids):
            by_task.setdefault(r["task_id"], []).append(r)
        gone = [a for rows in by_task.values() for a in superseded(rows, keep)]
        deleted = len(gone)
        if not dry_run:
            deleted = 0
            for i in range(0, len(gone), DELETE_CHUNK):
                deleted += await tx.execute("delete_artifacts", tenant_id=tenant_id, ids=gone[i:i + DELETE_CHUNK])
        tx.on_commit(lambda: _add(done, [], 0, deleted))


def _add(done, tasks, steps, artifacts):
    done["tasks"] += tasks
    done["steps"] += steps
    done["artifacts"] += artifacts
