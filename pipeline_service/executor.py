"""The execution loop: claim ready steps, run their handlers, report the outcome.

It only orchestrates; every state change is a manager operation.  Dispatch is
event-driven: a finished step wakes the loop at once, so its successors start
without waiting for a poll; the poll (``poll_interval``) only picks up work that
appeared some other way (another process, a retry delay running out).
"""
import asyncio
import json
import logging
import os
import socket

from .handler import call_handler, get_handler
from .ids import new_id

log = logging.getLogger(__name__)


class Executor:
    def __init__(self, manager, concurrency=64, poll_interval=1.0, lease_seconds=60.0):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a whole number >= 1")
        self.manager = manager
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_ms = int(lease_seconds * 1000)
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"
        self._wakeup = asyncio.Event()
        self._running = {}          # step id -> asyncio.Task running it
        self._revoked = set()       # step ids whose run was taken away (cancel, modify)
        self._in_handler = set()    # step ids whose handler is running now
        self._loop_task = None
        self._stopping = False

    @property
    def started(self):
        return self._loop_task is not None and not self._loop_task.done()

    def start(self):
        if not self.started:
            self._stopping = False
            self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop(), name="pipeline-dispatch")
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
        """Stop claiming; let running steps finish for ``timeout`` seconds, then cancel them."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        pending = list(self._running.values())
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=timeout)
            for task in not_done:
                task.cancel()
            await asyncio.gather(*not_done, return_exceptions=True)

    async def _dispatch_loop(self):
        failures = 0
        while not self._stopping:
            self._wakeup.clear()
            free = self.concurrency - len(self._running)
            claimed = 0
            if free > 0:
                try:
                    claims = await self.manager.claim_ready(self.owner, free, self.lease_ms)
                    failures = 0
                except Exception as exc:  # the loop must outlive any database trouble
                    failures += 1
                    delay = min(self.poll_interval * failures, 10.0)
                    log.error("pipeline executor cannot claim steps (%s); trying again in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                for claim in claims:
                    self._running[claim.id] = asyncio.create_task(self._run_step(claim), name=f"step-{claim.step_name}")
                claimed = len(claims)
            if claimed and claimed == free:
                continue  # maybe more ready: claim again as soon as a slot frees
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def _run_step(self, claim):
        try:
            step, input_data = await self.manager.start_step(claim)
            outcome = await self._attempt(claim, step, input_data)
            if isinstance(outcome, dict):
                await self.manager.succeed_step(claim, outcome)
            elif claim.run_attempt < step.max_attempts:
                delay = step.retry_delay(claim.run_attempt)
                await self.manager.requeue_step(claim, outcome, delay)
                if delay > 0:
                    asyncio.get_running_loop().call_later(delay, self.wake)
            else:
                await self.manager.fail_step(claim, outcome)
        except asyncio.CancelledError:
            if claim.id in self._revoked:
                return  # cancelled or re-planned by a person: the database already says so
            raise
        except Exception:
            # a database outage mid-step: the claim's lease will expire and the step run again
            log.exception("pipeline step %s of task %s could not be recorded", claim.step_name, claim.task_id)
        finally:
            self._running.pop(claim.id, None)
            self._revoked.discard(claim.id)
            self.wake()

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
