"""Claiming ready steps, fairly over tenants, within this process's free slots.

Tenants with ready steps are served in turn: the one with the fewest steps running
here first, then the one served longest ago, each to an equal share of the free
slots, never past ``tenant_limit`` running here; slots a tenant cannot use go, in
further passes, to the tenants not asked yet, then to those that had more.  A pass
asks up to TENANTS_PER_STATEMENT tenants in one statement: one round trip however
many tenants (with thousands of tenants of a few steps each, a statement per tenant
cost a round trip per claimed step).
"""
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from cachetools import LRUCache

from ..dag import parse_depends_on
from ..ids import now_ms
from .caches import EngineCaches
from .records import Claim

TENANTS_PER_CLAIM = 32   # tenants with ready steps read per refresh (a page, in tenant id order)
TENANTS_PER_STATEMENT = 64  # tenants a claim asks in one statement (a SELECT each, joined by UNION ALL)
TENANT_REFRESH_MS = 50   # how stale the list of tenants with ready steps may be
TENANT_MEMORY = 65536    # tenants whose last claim round is remembered (to serve the others first)


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


@dataclass(frozen=True)
class ClaimRequest:
    """What one claim round asks for."""

    owner: str
    free: int                      # slots to fill
    lease_ms: int
    step_types: list               # the step types this process can run
    running_per_tenant: dict       # tenant -> steps it has running here
    tenant_limit: Optional[int]    # steps one tenant may have running here, if limited
    round: int                     # this round's number (fairness: who was served longest ago)
    step_types_version: int = 0    # of the step types (see Claimer.step_types_changed)

    def room(self, tenant: str) -> int:
        limit = self.free if self.tenant_limit is None else self.tenant_limit - self.running_per_tenant.get(tenant, 0)
        return max(0, limit)


class Claimer:
    def __init__(self, storage, caches: EngineCaches) -> None:
        self.storage = storage
        self.caches = caches
        self._tenants_checked_at = 0
        self._tenant_cursor = ""       # the last tenant of the last page read (see _tenants_with_ready_steps)
        self._served: LRUCache[str, int] = LRUCache(TENANT_MEMORY)  # tenant -> claim round it was last served in
        # tenants a claim found nothing of to run (of the step types it could run then)
        self._drained: LRUCache[str, bool] = LRUCache(TENANT_MEMORY)
        self._step_types_version = 0
        self._rounds = 0

    def step_types_changed(self) -> None:
        """This process runs other step types now (a handler was registered): the tenants left out
        because nothing of theirs could be run here are asked again at the next claim."""
        self._step_types_version += 1  # a claim under way with the old ones drops no tenant
        self.caches.ready_tenants.update(self._drained)
        self._drained.clear()

    async def claim_ready(self, owner, free, lease_ms, step_types, running_per_tenant, tenant_limit=None):
        """Claim up to ``free`` ready steps of ``step_types`` (see the module's docstring).
        Claiming a root step marks its task started (just after the claim, see _mark_started)."""
        self._rounds += 1
        request = ClaimRequest(owner, free, lease_ms, step_types, running_per_tenant, tenant_limit, self._rounds,
                               self._step_types_version)  # step_types are the caller's of this very moment
        claimed, now = await self.storage.atomic(lambda tx: self._claim(tx, request))
        roots = {(r["tenant_id"], r["task_id"]) for r in claimed if not parse_depends_on(r["depends_on"])}
        if roots:
            await self._mark_started(roots, now)
        return [Claim(r["id"], r["tenant_id"], r["task_id"], r["step_name"], r["attempt"],
                      int(r["attempt_base"]), owner, r["input_version"], r["waiting_for"], r["woken_by"])
                for r in claimed]

    async def _claim(self, tx, request: "ClaimRequest"):
        """One claim round's transaction: passes over the tenants until the slots are full or
        no tenant asked has more; returns (the claimed rows, the time of the claim)."""
        now = now_ms()
        running = request.running_per_tenant
        tenants = sorted(await self._tenants_with_ready_steps(tx, now),
                         key=lambda t: (running.get(t, 0), self._served.get(t, 0)))
        left = {t: request.room(t) for t in tenants}
        queue = [t for t in tenants if left[t] > 0]
        claimed: list[dict] = []
        served: list[str] = []
        drained: set[str] = set()
        while queue and len(claimed) < request.free:  # each pass claims a step or drops the tenants it asked
            shares = equal_shares(queue, left, request.free - len(claimed))
            got = await self._claim_for(tx, shares, request.owner, request.lease_ms, request.step_types, now)
            counts = Counter(r["tenant_id"] for r in got)
            short = {t for t, share in shares.items() if counts[t] < share}  # no more it can run here
            for tenant in shares:
                left[tenant] -= counts[tenant]
            served += shares
            drained |= short
            claimed += got
            queue = [t for t in queue if t not in shares] + [t for t in shares if t not in short and left[t]]
        tx.on_commit(lambda: self._served.update((t, request.round) for t in served))
        tx.on_commit(lambda: self._drop(drained, request.step_types_version))
        return claimed, now

    def _drop(self, drained, version):
        if version != self._step_types_version:
            return
        self.caches.ready_tenants.difference_update(drained)
        self._drained.update(dict.fromkeys(drained, True))

    async def _mark_started(self, keys, now):
        """Mark the tasks ``{(tenant_id, task_id)}`` started (the first claim of a root step).

        A transaction of its own, after the claim's: a claim holds step rows and must
        never wait for a task row, which a state change holds while it waits for step
        rows (a deadlock).  The handlers start only after this, so a step never ends
        before its task is `running`; a crash in between leaves the step to recovery.
        """
        await self.storage.atomic(lambda tx: self._write_started(tx, keys, now))

    @staticmethod
    async def _write_started(tx, keys, now):
        tx.defer("mark_tasks_started", tenant_ids=sorted({k[0] for k in keys}),
                 task_ids=sorted({k[1] for k in keys}), now=now)

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
            # a read of committed rows: kept even if the claim rolls back
            self._tenant_cursor = rows[-1]["tenant_id"] if len(rows) == TENANTS_PER_CLAIM else ""
            self.caches.ready_tenants.update(r["tenant_id"] for r in rows)
            self._tenants_checked_at = now
        return list(self.caches.ready_tenants)

    async def _claim_for(self, tx, shares, owner, lease_ms, step_types, now):
        """Claim up to ``shares[tenant]`` ready steps of each tenant, oldest first, in one statement."""
        rows = await tx.fetch_union("select_ready_steps", [
            dict(tenant_id=tenant, now=now, step_types=step_types, limit=share) for tenant, share in shares.items()])
        by_attempt = {}  # locked above (FOR UPDATE): all of them are claimed
        for r in rows:  # with their next attempt, the claim token: computed here only, stored as is
            r["attempt"] = int(r["attempt"]) + 1
            by_attempt.setdefault(r["attempt"], []).append(r["id"])
        for attempt, ids in by_attempt.items():
            tx.defer("claim_steps", ids=ids, attempt=attempt, owner=owner, lease_expires_at=now + lease_ms, now=now)
        return rows
