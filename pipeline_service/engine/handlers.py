"""Handlers: the registry (step_type -> the function that does the step's work) and calling them.

A handler is ``async def handler(tenant_id, task_id, step_name, input_data, config) -> dict``;
a plain function is run in a thread of the executor's own (``SyncThreads``) so it
never blocks the event loop.
"""
import asyncio
import contextvars
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

from ..exceptions import InvalidInputError
from ..waits import is_waiting_handler

log = logging.getLogger(__name__)


class HandlerRegistry:
    """step_type -> the function that does the step's work.

    Each ``PipelineService`` owns one (docs/ARCHITECTURE.md, "Invariants"): its executor
    claims only the step types registered here, so two services in one process never
    run each other's steps.  The default service's registry lives in ``api``.

    Two layers: the host's handlers (``register``) over the built-in step types
    (``set_builtins``, by the service from ``steps/``).  A host's handler of a built-in's name
    replaces it (and unregistering it brings the built-in back); a built-in that is off on
    this host (``shell`` without ``shell_root``) has no handler, and ``off`` says why.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Callable] = {}
        self._builtins: dict[str, Callable] = {}
        self._off: dict[str, str] = {}

    def register(self, step_type: str, fn: Callable) -> Callable:
        """Register ``fn`` for ``step_type``; registering again replaces (and logs it)."""
        if not isinstance(step_type, str) or not step_type.strip():
            raise InvalidInputError(f"step_type must be a non-empty string, got {step_type!r}")
        if not callable(fn):
            raise InvalidInputError(f"the handler for step_type {step_type!r} is not callable: {fn!r}")
        if step_type in self._handlers and self._handlers[step_type] is not fn:
            log.info("handler for step_type %r replaced: %r -> %r", step_type, self._handlers[step_type], fn)
        self._handlers[step_type] = fn
        return fn

    def set_builtins(self, builtins: Mapping[str, Callable | str]) -> None:
        """Replace the built-in layer: step type -> its handler, or why it is off (a message)."""
        bad = [t for t, fn in builtins.items() if not isinstance(t, str) or not (callable(fn) or isinstance(fn, str))]
        if bad:
            raise InvalidInputError(f"built-in step types map a name to a handler or the reason it is off: "
                                    f"{bad[:3]!r} do not")
        self._builtins = {t: fn for t, fn in builtins.items() if callable(fn)}
        self._off = {t: why for t, why in builtins.items() if isinstance(why, str)}

    def get(self, step_type: str) -> Callable | None:
        return self._handlers.get(step_type) or self._builtins.get(step_type)

    def waits(self, step_type: str) -> bool:
        """Whether ``step_type`` has a handler here that waits without a slot (waits.waiting_handler)."""
        fn = self.get(step_type)
        return fn is not None and is_waiting_handler(fn)

    def off(self, step_type: str) -> str | None:
        """Why ``step_type``, a built-in, has no handler here (None: it has one, or is no built-in)."""
        return None if self.get(step_type) is not None else self._off.get(step_type)

    def builtin(self, step_type: str) -> bool:
        """Whether steps of ``step_type`` run with the built-in (no handler of the host's replaces it)."""
        return step_type not in self._handlers and step_type in self._builtins

    def step_types(self) -> list[str]:
        return sorted({*self._handlers, *self._builtins})

    def unregister(self, step_type: str) -> None:
        """Drop the host's handler of ``step_type`` (a built-in of that name runs its steps again)."""
        self._handlers.pop(step_type, None)


async def call_handler(fn, threads, tenant_id, task_id, step_name, input_data, config):
    """Run a handler: awaited if async, in one of ``threads`` if plain."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        result = await fn(tenant_id, task_id, step_name, input_data, config)
    else:
        result = await threads.run(tenant_id, fn, tenant_id, task_id, step_name, input_data, config)
    if inspect.isawaitable(result):
        result = await result
    return result


class HungThreadsError(RuntimeError):
    """A tenant's plain handlers hang: its next one is not started (its attempt fails)."""


class SyncThreads:
    """The threads plain handlers run in, one daemon thread per call, apart from the loop's default pool.

    At most ``size`` calls run at once that are still awaited; more wait for one to end.
    A call given up (its step timed out or was cancelled) whose thread keeps running is
    *hung*: it no longer counts against ``size``, so one tenant's hung handlers never hold
    up another tenant's.  Hung threads are bounded instead: a tenant with ``size // 4``
    (at least 1) of them, or with any while ``size`` hang in all, has its next plain
    handler refused until one ends.  So at most ``3 * size`` threads ever exist, and
    being daemon threads, hung ones never keep the process from exiting.
    """

    def __init__(self, size):
        self.size = size
        self.tenant_limit = max(1, size // 4)
        self.hung = Counter()  # tenant id -> its hung threads
        self._permits = asyncio.Semaphore(size)

    @property
    def total_hung(self):
        return sum(self.hung.values())

    async def run(self, tenant_id, fn, *args):
        async with self._permits:
            self._refuse_if_hung(tenant_id)  # counted now: calls that waited for a permit may have hung meanwhile
            call = _Call(self, tenant_id, fn, args)
            threading.Thread(target=call.run, daemon=True, name=f"pipeline-sync-{tenant_id}").start()
            try:
                result, error = await call.future
            except asyncio.CancelledError:
                call.give_up()
                raise
        if error is not None:  # raised here, not thrown in: asyncio would close the awaiting chain on GeneratorExit
            raise error
        return result

    def _refuse_if_hung(self, tenant_id):
        mine = self.hung[tenant_id]
        if mine >= self.tenant_limit or (mine and self.total_hung >= self.size):
            raise HungThreadsError(
                f"not started: {mine} plain handler thread(s) of tenant {tenant_id!r} still run after their steps "
                f"timed out or were cancelled ({self.total_hung} in all; at most {self.tenant_limit} per tenant, "
                f"{self.size} in all with sync_threads={self.size})")


class _Call:
    """One plain handler call: run in its own thread, its outcome handed to the loop."""

    def __init__(self, threads, tenant_id, fn, args):
        self.threads, self.tenant_id, self.fn, self.args = threads, tenant_id, fn, args
        self.loop = asyncio.get_running_loop()
        self.future = self.loop.create_future()
        self.context = contextvars.copy_context()  # as asyncio.to_thread does
        self.finished = False  # set by the thread
        self.abandoned = False  # set in the loop

    def run(self):
        try:  # everything a handler raises is its outcome, SystemExit included
            result, error = self.context.run(self.fn, *self.args), None
        except BaseException as exc:
            result, error = None, exc
        self.finished = True
        try:
            self.loop.call_soon_threadsafe(self._settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    def give_up(self):
        """In the loop: the step no longer waits for this call; a thread still running is hung."""
        if not self.finished:
            self.abandoned = True
            self.threads.hung[self.tenant_id] += 1
            log.warning("a plain handler of tenant %r still runs after its step timed out or was cancelled "
                        "(%d hung thread(s) now)", self.tenant_id, self.threads.total_hung)

    def _settle(self, result, error):
        if self.abandoned:
            self.threads.hung[self.tenant_id] -= 1
            if not self.threads.hung[self.tenant_id]:
                del self.threads.hung[self.tenant_id]
        elif not self.future.done():
            self.future.set_result((result, error))
