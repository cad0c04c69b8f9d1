"""The execution loop: claim ready steps, run their handlers, report the outcome.

It only orchestrates; every state change is a manager operation.

* Dispatch is event-driven: a finished step (or a submit, resume, modify) in this
  process wakes the loop at once, so successors start without waiting for a poll.
* Polling only finds what other processes did and expired leases: one cheap probe
  per ``poll_interval`` when idle, a claim or a recovery only when it finds work.
* A heartbeat extends the leases of the steps running here and notices steps taken
  away elsewhere (cancelled, re-planned, recovered), whose handlers it then stops.
* Claims are spread fairly over tenants, within a global and a per-tenant limit.
* Outcomes are recorded in batches (group commit). A step's slot is free as soon
  as its handler returns, so the next steps run while the batch commits; at most
  ``concurrency`` outcomes wait to be recorded (then claiming pauses).
"""
import asyncio
import json
import logging
import os
import socket
from collections import Counter

from .handler import call_handler, get_handler, registered_step_types
from .ids import new_id, now_ms
from .manager import Outcome
from .state import check_seconds, check_whole

MAX_BATCH = 256  # outcomes recorded per transaction at most
# transactions recording outcomes at once: while one waits for its commit, the next
# batch is written (both lock their tasks' rows in index order: no deadlock)
RECORDERS = 2

log = logging.getLogger(__name__)
MAX_CONCURRENCY = 10_000
MIN_POLL_SECONDS = 0.01  # below it the idle loop would spin (0 polled at 85% CPU)
MIN_LEASE_SECONDS = 1.0  # the heartbeat renews every third of it


def check_options(concurrency, tenant_concurrency, poll_interval, lease_seconds, max_crashes):
    """The executor's options, or an InvalidInputError naming the bad one (before anything runs)."""
    check_whole(concurrency, "concurrency", 1, MAX_CONCURRENCY)
    if tenant_concurrency is not None:
        check_whole(tenant_concurrency, "tenant_concurrency", 1, MAX_CONCURRENCY)
    check_seconds(poll_interval, "poll_interval", MIN_POLL_SECONDS, 3600.0)
    check_seconds(lease_seconds, "lease_seconds", MIN_LEASE_SECONDS, 86_400.0)
    check_whole(max_crashes, "max_crashes", 1, 1000)


class Executor:
    def __init__(self, manager, concurrency=64, tenant_concurrency=None, poll_interval=1.0, lease_seconds=30.0,
                 max_crashes=3):
        check_options(concurrency, tenant_concurrency, poll_interval, lease_seconds, max_crashes)
        self.manager = manager
        self.concurrency = concurrency
        self.tenant_concurrency = tenant_concurrency
        self.poll_interval = poll_interval
        self.lease_ms = int(lease_seconds * 1000)
        self.heartbeat_interval = lease_seconds / 3
        self.max_crashes = max_crashes
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"
        self._wakeup = asyncio.Event()
        self._running = {}          # step id -> asyncio.Task running it (until its outcome is recorded)
        self._tenant_of = {}        # step id -> tenant id, while the step holds a slot (until its handler ends)
        self._revoked = set()       # step ids whose run was taken away (cancel, modify, recovery)
        self._in_handler = set()    # step ids whose handler is running now
        self._tasks = []
        self._stopping = False
        self._outcomes = []         # (Outcome, future) waiting to be recorded
        self._recorders = set()     # tasks recording them, one transaction per batch

    @property
    def started(self):
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def start(self):
        if not self.started:
            self._stopping = False
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._dispatch_loop(), name="pipeline-dispatch"),
                           loop.create_task(self._heartbeat_loop(), name="pipeline-heartbeat")]
        return self

    def wake(self):
        self._wakeup.set()

    def interrupt(self, step_ids):
        """Stop the handlers of these steps if they run here; whatever they return is discarded.

        An async handler is cancelled (it sees CancelledError); a plain function in
        a worker thread cannot be stopped, but its result is dropped.
        """
        for step_id in step_ids:
            task = self._running.get(step_id)
            if task is not None:
                self._revoked.add(step_id)
                if step_id in self._in_handler:  # never cancel a database write half-way
                    task.cancel()

    async def stop(self, timeout=30.0):
        """Stop claiming; let running steps finish for ``timeout`` seconds, then cancel them.

        A step cancelled here stays `running` in the database until its lease
        expires; then any process runs it again (it is not counted as a failure).
        """
        self._stopping = True
        self.wake()
        dispatch, heartbeat = self._tasks or (None, None)
        if dispatch is not None:  # let a claim under way finish (its steps then run below)
            _, not_done = await asyncio.wait([dispatch], timeout=timeout)
            for task in (*not_done, heartbeat):
                task.cancel()
            await asyncio.gather(dispatch, heartbeat, return_exceptions=True)
        self._tasks = []
        pending = list(self._running.values())
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=timeout)
            for task in not_done:
                task.cancel()
            await asyncio.gather(*not_done, return_exceptions=True)
        if self._recorders:  # what finished is recorded before we go
            await asyncio.wait(list(self._recorders), timeout=timeout)

    # ---- the loops --------------------------------------------------------------
    async def _dispatch_loop(self):
        failures, last_poll = 0, 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                woken = await self._sleep()
                waiting = False
                if loop.time() - last_poll >= self.poll_interval:  # also when busy: leases expire anyway
                    last_poll = loop.time()
                    waiting = await self._poll()
                if woken or waiting:
                    await self._claim()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any database trouble
                failures += 1
                delay = min(self.poll_interval * failures, 10.0)
                log.error("pipeline executor %s: database trouble (%s); trying again in %.1fs",
                          self.owner, exc, delay)
                await asyncio.sleep(delay)

    async def _sleep(self):
        """Wait for a wake-up (True) or the poll interval (False)."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._wakeup.clear()

    async def _poll(self):
        """One probe; recovers expired leases; True if a step this process can run is ready
        (ready steps of other step types start no claim: idle stays one query per poll)."""
        now = now_ms()
        probe = (await self.manager.storage.probe("probe", now=now, step_types=registered_step_types()))[0]
        if probe["next_expiry"] is not None and probe["next_expiry"] < now:
            recovered = await self.manager.recover_expired(now, self.max_crashes)
            if recovered:
                log.warning("pipeline executor %s: took back %d step(s) whose worker's lease expired",
                            self.owner, recovered)
                return True
        next_ready = probe["next_ready"]  # a step of ours due later (a retry delay)
        if next_ready is not None and (next_ready - now) / 1000 < self.poll_interval:
            asyncio.get_running_loop().call_later((next_ready - now) / 1000, self.wake)
        return bool(probe["runnable"])

    async def _claim(self):
        """Claim while there are free slots and ready steps."""
        while not self._stopping:
            # a step's slot is free once its handler ends; at most `concurrency` outcomes wait to be recorded
            free = min(self.concurrency - len(self._tenant_of), 2 * self.concurrency - len(self._running))
            step_types = registered_step_types()
            if free <= 0 or not step_types:
                return
            claims = await self.manager.claim_ready(self.owner, free, self.lease_ms, step_types,
                                                    Counter(self._tenant_of.values()), self.tenant_concurrency)
            for claim in claims:
                self._tenant_of[claim.id] = claim.tenant_id
                self._running[claim.id] = asyncio.create_task(self._run_step(claim), name=f"step-{claim.step_name}")
            if len(claims) < free:
                return

    async def _heartbeat_loop(self):
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            if not self._running:
                continue
            try:
                lost = await self.manager.heartbeat(self.owner, self.lease_ms, list(self._running))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("pipeline executor %s: cannot extend leases (%s)", self.owner, exc)
                continue
            if lost:
                log.info("pipeline executor %s: %d step(s) were taken away elsewhere; stopping them",
                         self.owner, len(lost))
                self.interrupt(lost)

    # ---- one step ------------------------------------------------------------------
    async def _run_step(self, claim):
        try:
            step, input_data = await self.manager.start_step(claim)
            result = await self._attempt(claim, step, input_data)
            self._free_slot(claim.id)
            if isinstance(result, dict):
                await self._record(Outcome(claim, output=result))
            elif claim.run_attempt < step.max_attempts:
                delay = step.retry_delay(claim.run_attempt)
                await self._record(Outcome(claim, error=result, retry_delay=delay))
                if delay > 0:
                    asyncio.get_running_loop().call_later(delay, self.wake)
            else:
                await self._record(Outcome(claim, error=result))
        except asyncio.CancelledError:
            if claim.id in self._revoked:
                return  # cancelled or re-planned: the database already says so
            raise
        except Exception:
            # e.g. a database outage mid-step: the lease will expire and the step run again
            log.exception("pipeline step %s of task %s could not be recorded", claim.step_name, claim.task_id)
        finally:
            self._running.pop(claim.id, None)
            self._free_slot(claim.id)
            self._revoked.discard(claim.id)
            self.wake()

    def _free_slot(self, step_id):
        """The step's handler has ended: its slot goes to the next ready step while the outcome is recorded."""
        if self._tenant_of.pop(step_id, None) is not None:
            self.wake()

    async def _record(self, outcome):
        """Have the outcome recorded with whatever else finished meanwhile (group commit);
        True if it was, False if its claim had been taken away."""
        done = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, done))
        if len(self._recorders) < RECORDERS:
            recorder = asyncio.create_task(self._record_batches(), name="pipeline-recorder")
            self._recorders.add(recorder)
            recorder.add_done_callback(self._recorders.discard)
        return await done

    async def _record_batches(self):
        while self._outcomes:
            batch, self._outcomes = self._outcomes[:MAX_BATCH], self._outcomes[MAX_BATCH:]
            try:
                recorded = await self.manager.finish([outcome for outcome, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), ok in zip(batch, recorded):
                if not done.done():
                    done.set_result(ok)

    async def _attempt(self, claim, step, input_data):
        """Run the handler once: its dict result, or an error message."""
        fn = get_handler(step.step_type)
        if fn is None:
            return f"no handler registered for step_type {step.step_type!r}"
        if claim.id in self._revoked:
            raise asyncio.CancelledError()  # taken away before it began
        self._in_handler.add(claim.id)
        try:
            result = await asyncio.wait_for(
                call_handler(fn, claim.tenant_id, claim.task_id, claim.step_name, input_data, step.config),
                timeout=step.timeout)
        except asyncio.TimeoutError:
            return f"timed out after {step.timeout}s (attempt {claim.run_attempt})"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._in_handler.discard(claim.id)
        if not isinstance(result, dict):
            return f"handler for {step.step_type!r} returned {type(result).__name__}, not a dict"
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            return f"handler for {step.step_type!r} returned a dict that is not JSON-serialisable: {exc}"
        return result
