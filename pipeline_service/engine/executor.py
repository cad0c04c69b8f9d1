"""The execution loop: claim ready steps, run their handlers, report the outcome.

It only orchestrates; every state change is an operation of the claimer or the recorder.

* Dispatch is event-driven: a finished step (or a submit, resume, modify) in this
  process wakes the loop at once, so successors start without waiting for a poll.
* Polling only finds what other processes did, expired leases and due schedule ticks:
  one cheap probe per ``poll_interval`` when idle, a claim, a recovery or a tick only
  when it finds work (a tick due before the next poll gets a poll at its time).
* A heartbeat extends the leases of the claims running here (only those) and notices
  claims taken away elsewhere (cancelled, re-planned, recovered), whose handlers it stops.
* Claims are spread fairly over tenants, within a global and a per-tenant limit.
  Everything the executor tracks is keyed by the claim (step id and attempt), so an
  old run of a step that ends late never touches a newer run of the same step.
* A handler's outcome fails at most its own attempt: whatever it raises (SystemExit
  and CancelledError of its own included) and any result that cannot be stored as it
  is (checked in its stored form) become that attempt's error.
* Outcomes are recorded in batches (group commit). A step's slot is free as soon
  as its handler returns, so the next steps run while the batch commits; at most
  ``concurrency`` outcomes wait to be recorded (then claiming pauses). If the
  database refuses a batch (not for want of a connection), its outcomes are
  recorded one by one, so one tenant's unstorable outcome never fails another's.
* A handler may return a ``waits.Wait``: its step then waits without a slot (engine/waiting.py);
  the probe also says when a waiting step is due, and only then is it woken (no query more
  when idle).
* A graceful ``stop()`` hands back the claims it cannot finish: their steps are ready
  for any process at once, the attempt counted neither as a failure nor as a crash.
"""
import asyncio
import logging
import os
import socket
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..json_objects import MAX_JSON_BYTES, from_json, stored_json_utf8, to_json
from ..store.packing import DEFAULT_COMPRESS_ABOVE, pack
from ..exceptions import DatabaseUnavailableError, InvalidInputError, InvalidStateError, StepFailed, StorageError
from .handlers import SyncThreads, call_handler
from .preparing import for_handler
from ..ids import new_id, now_ms
from .records import CheckedOutput, Claim, ContentOptions, Outcome
from .writes import WRITE_OVERHEAD
from ..dag import check_seconds, check_whole
from ..waits import Wait

MAX_BATCH = 256  # outcomes recorded per transaction at most
# bytes of outputs as stored per batch at most: a batch goes to MySQL in one round trip, which
# must fit max_allowed_packet (16 MiB by default) with its contents in base64 (counted twice)
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_ERROR_CHARS = 2000   # of a failed attempt's message as stored (the task's error joins them)
TRACEBACK_FRAMES = 20    # of a handler's traceback as logged and stored (the innermost ones)
MAX_TRACE_CHARS = 8192   # of a failed attempt's traceback as stored (its end: the innermost frames)
# transactions recording outcomes at once: while one waits for its commit, the next
# batch is written (both lock their tasks' rows in index order: no deadlock)
RECORDERS = 2

log = logging.getLogger(__name__)
MAX_CONCURRENCY = 10_000
MIN_POLL_SECONDS = 0.01  # below it the idle loop would spin (0 polled at 85% CPU)
MIN_LEASE_SECONDS = 1.0  # the heartbeat renews every third of it
MAX_SYNC_THREADS = 1_000


def check_options(concurrency, tenant_concurrency, poll_interval, lease_seconds, max_crashes, sync_threads):
    """The executor's options, or an InvalidInputError naming the bad one (before anything runs)."""
    check_whole(concurrency, "concurrency", 1, MAX_CONCURRENCY)
    if tenant_concurrency is not None:
        check_whole(tenant_concurrency, "tenant_concurrency", 1, MAX_CONCURRENCY)
    check_seconds(poll_interval, "poll_interval", MIN_POLL_SECONDS, 3600.0)
    check_seconds(lease_seconds, "lease_seconds", MIN_LEASE_SECONDS, 86_400.0)
    check_whole(max_crashes, "max_crashes", 1, 1000)
    check_whole(sync_threads, "sync_threads", 1, MAX_SYNC_THREADS)


@dataclass(frozen=True)
class Failed:
    """An attempt without a storable result: the message to store, and the exception behind it."""

    message: str
    exc: BaseException | None = None


@dataclass(frozen=True)
class Round:
    """What one ``run_once()`` did: the claims it made, and the outcomes recorded for them in claim
    order (a claim taken away meanwhile, or whose outcome could not be recorded, has none)."""

    claims: tuple[Claim, ...]
    outcomes: tuple[Outcome, ...]


class OutcomeNotStored(Exception):
    """The database refused this outcome on its own (not for want of a connection)."""


class Executor:
    def __init__(self, storage, claimer, recorder, handlers, events, waiting, concurrency=64,
                 tenant_concurrency=None, poll_interval=1.0, lease_seconds=30.0, max_crashes=3, sync_threads=32,
                 ticker=None, content=ContentOptions(MAX_JSON_BYTES, DEFAULT_COMPRESS_ABOVE)):
        check_options(concurrency, tenant_concurrency, poll_interval, lease_seconds, max_crashes, sync_threads)
        self.storage = storage
        self.claimer = claimer      # claims ready steps (fairness over tenants)
        self.recorder = recorder    # records outcomes, leases, hand-backs, recovery
        self.handlers = handlers    # the registry: which step types this process runs, and how
        self.events = events        # tells hosts when a handler starts (step.started)
        self.waiting = waiting      # wakes waiting steps once they are due
        self.ticker = ticker        # fires due schedule ticks (engine/schedules.py), if any
        self.concurrency = concurrency
        self.tenant_concurrency = tenant_concurrency
        self.poll_interval = poll_interval
        self.lease_ms = int(lease_seconds * 1000)
        self.heartbeat_interval = lease_seconds / 3
        self.max_crashes = max_crashes
        self.content = content  # a larger result fails its attempt, naming the limit; how it is stored
        self.sync = SyncThreads(sync_threads)  # where plain handlers run
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"
        self._wakeup = asyncio.Event()
        self._poll_now = False      # a waiting step is due before the next poll: probe at the next wake-up
        self._tick_due = False      # a schedule's tick falls before the next poll: poll at its time
        self._running = {}          # Claim -> asyncio.Task running it (until its outcome is recorded)
        self._slots = set()         # Claims holding a slot (until their handler ends)
        self._revoked = set()       # Claims taken away (cancel, modify, recovery)
        self._in_handler = set()    # Claims whose handler is running now
        self._tasks = []
        self._stopping = False
        self._outcomes = []         # (Outcome, future, bytes of its output as stored) waiting to be recorded
        self._recorders = set()     # tasks recording them, one transaction per batch

    @property
    def started(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def start(self) -> "Executor":
        if not self.started:
            self._stopping = False
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._dispatch_loop(), name="pipeline-dispatch"),
                           loop.create_task(self._heartbeat_loop(), name="pipeline-heartbeat")]
        return self

    def wake(self) -> None:
        self._wakeup.set()

    def interrupt(self, claims: Iterable[tuple[str, int]]) -> None:
        """Stop the handlers of these claims ``(step id, attempt)`` if they run here; whatever
        they return is discarded.  A later claim of the same step is a new run: left alone.

        An async handler is cancelled (it sees CancelledError); a plain function in
        a thread cannot be stopped, but its result is dropped.
        """
        tokens = set(claims)
        for claim, task in list(self._running.items()):
            if (claim.id, claim.attempt) in tokens:
                self._revoke(claim, task)

    def _revoke(self, claim, task):
        self._revoked.add(claim)
        if claim in self._in_handler:  # never cancel a database write half-way
            task.cancel()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; let running steps finish for ``timeout`` seconds, then cancel them.

        The claims of the steps cancelled here are handed back at once: each step is
        ready again for any process, its attempt counted neither as a failure nor as a
        crash (only a lost lease is). Plain handlers' threads are not waited for.
        """
        self._stopping = True
        self.wake()
        dispatch, heartbeat = self._tasks or (None, None)
        if dispatch is not None:  # let a claim under way finish (its steps then run below)
            _, not_done = await asyncio.wait([dispatch], timeout=timeout)
            await _cancel(not_done)
        unfinished = await self._end_runs(timeout)
        if self._recorders:  # what finished is recorded before we go
            await asyncio.wait(list(self._recorders), timeout=timeout)
        await self._hand_back(unfinished)
        if heartbeat is not None:  # the leases were kept up until now
            await _cancel([heartbeat])
        self._tasks = []

    async def _end_runs(self, timeout):
        """Give the running steps ``timeout`` seconds, then cancel them; the claims cancelled."""
        runs = dict(self._running)
        if not runs:
            return []
        _, late = await asyncio.wait(runs.values(), timeout=timeout)
        await _cancel(late)
        unfinished = [claim for claim, task in runs.items() if task in late]
        for claim in unfinished:  # a run cancelled before it began never cleaned up after itself
            self._forget(claim)
        return unfinished

    async def _hand_back(self, claims):
        if not claims:
            return
        try:
            released = await self.recorder.release(claims)
        except Exception:
            log.exception("pipeline executor %s: could not hand back %d unfinished step(s); they run again once "
                          "their lease expires", self.owner, len(claims))
            return
        log.info("pipeline executor %s: stopped; handed back %d unfinished step(s), ready for any process",
                 self.owner, released)

    # ---- the loops --------------------------------------------------------------
    async def _dispatch_loop(self):
        failures, last_poll = 0, 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                woken = await self._sleep()
                waiting = False
                # also when busy: leases expire anyway
                if self._tick_due or self._poll_now or loop.time() - last_poll >= self.poll_interval:
                    self._tick_due = self._poll_now = False
                    last_poll = loop.time()
                    waiting = await self._poll()
                if woken or waiting:
                    await self._claim()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any trouble
                failures += 1
                delay = min(self.poll_interval * failures, 10.0)
                if isinstance(exc, StorageError):
                    log.error("pipeline executor %s: database trouble (%s); trying again in %.1fs",
                              self.owner, exc, delay)
                else:
                    log.exception("pipeline executor %s: unexpected error; trying again in %.1fs", self.owner, delay)
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
        probe = (await self.storage.probe("probe", now=now, step_types=self.handlers.step_types()))[0]
        if probe["next_expiry"] is not None and probe["next_expiry"] < now:
            recovered = await self.recorder.recover_expired(now, self.max_crashes)
            if recovered:
                log.warning("pipeline executor %s: took back %d step(s) whose worker's lease expired",
                            self.owner, recovered)
                return True
        next_tick = probe.get("next_tick")
        ticked = await self._fire_ticks(next_tick, now)
        if next_tick is not None and now < next_tick and (next_tick - now) / 1000 < self.poll_interval:
            asyncio.get_running_loop().call_later((next_tick - now) / 1000, self._poll_at_tick)
        next_ready = probe["next_ready"]  # a step of ours due later (a retry delay)
        if next_ready is not None and (next_ready - now) / 1000 < self.poll_interval:
            asyncio.get_running_loop().call_later((next_ready - now) / 1000, self.wake)
        woken, next_due = 0, probe["next_due"]  # the first waiting step's due time
        if next_due is not None and next_due <= now:  # its time came (or its child task ended): wake
            wake = await self.waiting.wake_due(now)
            woken = wake.woken
            if wake.more:  # a full batch: the rest of what is due now is woken at the next turn
                self._probe_soon()
        elif next_due is not None and (next_due - now) / 1000 < self.poll_interval:  # due before the next poll
            asyncio.get_running_loop().call_later((next_due - now) / 1000, self._probe_soon)
        return bool(probe["runnable"]) or ticked or woken > 0

    def _probe_soon(self):
        """A waiting step is due before the next poll: the loop polls (and wakes it) at its time."""
        self._poll_now = True
        self.wake()

    def _poll_at_tick(self):
        """A tick is due now: the loop polls (and fires it) without waiting for its interval."""
        self._tick_due = True
        self.wake()

    async def _fire_ticks(self, next_tick, now):
        """Fire the schedules' due ticks (the probe's ``next_tick``); True if tasks were created."""
        if self.ticker is None or next_tick is None or next_tick > now:
            return False
        try:
            fired = await self.ticker.fire_due()
        except Exception as exc:  # the ticks wait for the next poll; the claims must not
            log.error("pipeline executor %s: could not fire due schedule ticks (%s); trying again at the next poll",
                      self.owner, exc)
            return False
        self.interrupt(fired.stop)  # cancel_previous: the cancelled tasks' handlers running here
        if fired.created:
            log.debug("pipeline executor %s: %d schedule tick(s) created their task", self.owner, fired.created)
        return fired.created > 0

    async def _claim(self):
        """Claim while there are free slots and ready steps."""
        while not self._stopping:
            # a step's slot is free once its handler ends; at most `concurrency` outcomes wait to be recorded
            free = min(self.concurrency - len(self._slots), 2 * self.concurrency - len(self._running))
            if free <= 0 or len(await self._claim_and_run(free)) < free:
                return

    async def _claim_and_run(self, limit):
        """Claim up to ``limit`` ready steps of this process's step types and start running them;
        the runs started (claim -> asyncio task)."""
        step_types = self.handlers.step_types()
        if not step_types:
            return {}
        claims = await self.claimer.claim_ready(self.owner, limit, self.lease_ms, step_types,
                                                Counter(c.tenant_id for c in self._slots), self.tenant_concurrency)
        # their inputs: cached, or read for all of them at once (if this fails, the claims' leases
        # run out and they run again, as when a step's run fails to start)
        started = await self.recorder.start_steps(claims)
        for claim in claims:
            self._slots.add(claim)
            self._running[claim] = asyncio.create_task(self._run_step(claim, started[claim]),
                                                       name=f"step-{claim.step_name}")
        return {claim: self._running[claim] for claim in claims}

    async def run_once(self) -> Round:
        """One claim round by hand: claim what is ready (up to ``concurrency``), run every claimed
        handler to its end, record the outcomes, and say what it did (a ``Round``).

        No loop and no timing: a test steps the engine deterministically (the successors a round
        makes ready run in the next one; a step due later, after a retry delay, is not waited
        for; expired leases are not recovered). Only while the executor is not started
        (a service built with ``autostart=False``).
        """
        if self.started:
            raise InvalidStateError("run_once() steps the engine by hand; the executor's loop is running "
                                    "(build the service with autostart=False, or stop it first)")
        runs = await self._claim_and_run(self.concurrency)
        outcomes = await asyncio.gather(*runs.values())
        return Round(claims=tuple(runs), outcomes=tuple(o for o in outcomes if o is not None))

    async def _heartbeat_loop(self):
        """Until stop() ends it: extend the leases of the claims running here."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self._running:
                await self._beat()

    async def _beat(self):
        try:
            lost = await self.recorder.heartbeat(self.owner, self.lease_ms, list(self._running))
        except Exception as exc:
            log.error("pipeline executor %s: cannot extend leases (%s)", self.owner, exc)
            return
        if lost:
            log.info("pipeline executor %s: %d step(s) were taken away elsewhere; stopping them",
                     self.owner, len(lost))
            for claim in lost:
                task = self._running.get(claim)
                if task is not None:
                    self._revoke(claim, task)

    # ---- one step ------------------------------------------------------------------
    async def _run_step(self, claim, started):
        """Run a claimed step (``started``: its definition and input) and record its outcome; the
        Outcome recorded, or None."""
        try:
            started = await self.recorder.with_waited(claim, started)
            step = started.step
            result = await self._attempt(claim, step, started.input)
            self._free_slot(claim)
            try:
                return await self._record_outcome(claim, step, result)
            except OutcomeNotStored as exc:  # this outcome alone: its attempt fails with the database's reason
                return await self._record_outcome(claim, step, Failed(f"its outcome could not be stored: {exc}"))
        except asyncio.CancelledError:
            if claim in self._revoked:
                return None  # cancelled or re-planned: the database already says so
            raise
        except Exception:
            # e.g. a database outage mid-step: the lease expires and the step runs again
            log.exception("pipeline step %s of task %s could not be run or recorded", claim.step_name, claim.task_id)
        finally:
            self._forget(claim)
            self.wake()

    def _forget(self, claim):
        self._running.pop(claim, None)
        self._free_slot(claim)
        self._revoked.discard(claim)

    def _free_slot(self, claim):
        """The step's handler has ended: its slot goes to the next ready step while the outcome is recorded."""
        if claim in self._slots:
            self._slots.discard(claim)
            self.wake()

    async def _attempt(self, claim, step, input_data):
        """Run the handler once: the JSON text its result is stored as, or a Failed."""
        fn = self.handlers.get(step.step_type)
        if fn is None:
            return Failed(f"no handler registered for step_type {step.step_type!r}")
        if claim in self._revoked:
            raise asyncio.CancelledError()  # taken away before it began
        _log_step(logging.DEBUG, claim, "started")
        self.events.emit("step.started", claim.tenant_id, claim.task_id, step_name=claim.step_name,
                         attempt=claim.run_attempt)
        input_data, config, problem = for_handler(step, input_data)  # its rendered config, if it has templates
        if problem is not None:  # a template or `when` that could not be evaluated fails the attempt
            return Failed(problem)
        # the handler's own copy, not the cached plan's (the step's own config: from its JSON text, made once)
        config = from_json(step.config_text if config is step.config else to_json(config))
        deadline = asyncio.timeout(step.timeout)
        self._in_handler.add(claim)
        try:
            async with deadline:
                result = await call_handler(fn, self.sync, claim.tenant_id, claim.task_id, claim.step_name,
                                            input_data, config)
        except BaseException as exc:  # whatever the handler raises fails this attempt only,
            if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():
                raise  # except a cancel of ours (cancelled, re-planned, stopping)
            return _timed_out(claim, step) if deadline.expired() else Failed(_raised(exc), exc)
        finally:
            self._in_handler.discard(claim)
        if deadline.expired():  # it returned although its time was up
            return _timed_out(claim, step)
        if isinstance(result, Wait):
            return _checked_wait(result, step.step_type)
        return _stored_form(result, step.step_type, self.content)

    async def _record_outcome(self, claim, step, result):
        """The Outcome, once recorded; None if the claim had been taken away meanwhile."""
        outcome = _outcome(claim, step, result)
        if not await self._record(outcome, result.stored.size if isinstance(result, CheckedOutput) else 0):
            return None
        if outcome.retry_delay:
            asyncio.get_running_loop().call_later(outcome.retry_delay, self.wake)
        return outcome

    async def _record(self, outcome, size):
        """Have the outcome recorded with whatever else finished meanwhile (group commit);
        True if it was, False if its claim had been taken away."""
        done = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, done, size))
        if len(self._recorders) < RECORDERS:
            recorder = asyncio.create_task(self._record_batches(), name="pipeline-recorder")
            self._recorders.add(recorder)
            recorder.add_done_callback(self._recorders.discard)
        return await done

    async def _record_batches(self):
        while self._outcomes:
            await self._record_batch(self._next_batch())

    def _next_batch(self):
        """Up to MAX_BATCH outcomes, with at most MAX_BATCH_BYTES of outputs as stored — less if the
        server's max_allowed_packet is smaller (counting them twice: more than their base64) — and
        at least one outcome (one too big alone is refused by name: engine/writes.py)."""
        count, total = 0, 0
        packet = self.storage.connector.max_packet
        limit = MAX_BATCH_BYTES if packet is None else min(MAX_BATCH_BYTES, (packet - WRITE_OVERHEAD) // 2)
        for _, _, size in self._outcomes[:MAX_BATCH]:
            if count and total + size > limit:
                break
            count, total = count + 1, total + size
        batch, self._outcomes = self._outcomes[:count], self._outcomes[count:]
        return batch

    async def _record_batch(self, batch):
        """One transaction for the batch. If the database refuses it (not for want of a connection),
        each outcome alone: one it cannot store then fails only its own attempt."""
        try:
            recorded = await self.recorder.finish([outcome for outcome, _, _ in batch])
        except Exception as exc:
            refused = self._refused(exc)
            if refused and len(batch) > 1:
                log.warning("pipeline executor %s: the database refused a batch of %d outcomes (%s); recording "
                            "them one by one", self.owner, len(batch), exc)
                for item in batch:
                    await self._record_batch([item])
            else:
                _settle(batch, OutcomeNotStored(_raised(exc)) if refused else exc)
            return
        for (_, done, _), ok in zip(batch, recorded):
            if not done.done():
                done.set_result(ok)

    def _refused(self, exc):
        """Did the database refuse what was written (rather than fail to be reached, or pick a deadlock victim)?"""
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return not isinstance(exc, (DatabaseUnavailableError, OSError)) and not isinstance(cause, OSError) and (
            not self.storage.connector.retryable(cause))


async def _cancel(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _settle(batch, exc):
    for _, done, _ in batch:
        if not done.done():
            done.set_exception(exc)


def _stored_form(result, step_type, content: ContentOptions):
    """A handler's result as it is stored (checked: UTF-8, no NaN, bounded depth and size;
    compressed above the threshold), or a Failed saying why it cannot be."""
    what = f"the result of handler {step_type!r}"
    try:
        text, utf8 = stored_json_utf8(result, what, max_bytes=content.max_bytes)
        return CheckedOutput(text, pack(text, content.compress_above, utf8))
    except InvalidInputError as exc:
        return Failed(str(exc))
    except Exception as exc:  # an object that breaks while being read (a hostile __iter__, __str__, ...)
        return Failed(f"{what} cannot be read: {_raised(exc)}", exc)


def _checked_wait(wait, step_type):
    """A handler's Wait as the recorder stores it, or a Failed saying why it cannot be."""
    try:
        return wait.checked()
    except InvalidInputError as exc:
        return Failed(f"the wait handler {step_type!r} returned cannot be: {exc}")


def _timed_out(claim, step):
    return Failed(f"timed out after {step.timeout}s (attempt {claim.run_attempt})")


def _raised(exc):
    """What a handler raised, as a message."""
    try:
        text = str(exc)
    except Exception:
        text = "(its message cannot be shown)"
    if isinstance(exc, StepFailed) and text:
        return text
    said = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, Exception):
        return said
    if isinstance(exc, asyncio.CancelledError):
        return f"the handler raised {said} of its own (nothing cancelled it)"
    return f"the handler raised {said} (only this attempt fails; the process keeps running)"


def _storable(message):
    """A message as the error column holds it: valid UTF-8 (lone surrogates escaped), bounded."""
    text = _utf8(message)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def _utf8(text):
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _outcome(claim, step, result):
    """The Outcome of an attempt, logged: succeeded, failed with a retry to come, or failed for good."""
    if isinstance(result, CheckedOutput):
        _log_step(logging.DEBUG, claim, "succeeded")
        return Outcome(claim, output_text=result.text, output_stored=result.stored)
    if isinstance(result, Wait):
        _log_step(logging.DEBUG, claim, f"waits for {result.kind}")
        return Outcome(claim, wait=result)
    error = _storable(result.message)
    trace = _trace(result.exc)
    if claim.run_attempt < step.max_attempts:
        delay = step.retry_delay(claim.run_attempt)
        _log_step(logging.INFO, claim, f"failed, retried in {delay:g}s: {error}", trace)
        return Outcome(claim, error=error, retry_delay=delay, trace=_stored_trace(trace))
    _log_step(logging.WARNING, claim, f"failed: {error}", trace)
    return Outcome(claim, error=error, trace=_stored_trace(trace))


def _trace(exc):
    """A handler's exception with the innermost TRACEBACK_FRAMES frames of its traceback, or None."""
    if exc is None:
        return None
    return _utf8("".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES))).rstrip()


def _stored_trace(trace):
    """A traceback as the step row keeps it: its last MAX_TRACE_CHARS characters (the innermost
    frames and the exception are at the end)."""
    if trace is None or len(trace) <= MAX_TRACE_CHARS:
        return trace
    return "…" + trace[-(MAX_TRACE_CHARS - 1):]


def _log_step(level, claim, what, trace=None):
    """A step outcome in the log, with its tenant, task, step and attempt as fields (and the
    traceback of what a handler raised)."""
    if not log.isEnabledFor(level):
        return
    log.log(level, "pipeline step %s (tenant %s, task %s, attempt %d) %s%s", claim.step_name, claim.tenant_id,
            claim.task_id, claim.run_attempt, what, "" if trace is None else "\n" + trace,
            extra={"tenant": claim.tenant_id, "task": claim.task_id, "step": claim.step_name,
                   "attempt": claim.run_attempt})
