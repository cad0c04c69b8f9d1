"""Lifecycle events for hosts: ``service.on(event, callback)`` (docs/ARCHITECTURE.md, "Events").

An event tells of a change this process made, once it has committed: the component
that decides a change registers its event with ``at_commit(tx, ...)`` (the
transaction's ``on_commit``), so a change that rolls back (or that ``atomic()``
runs again) tells nothing, or tells it once.  The executor emits ``step.started``
itself, when a handler starts (its claim has committed by then).

Delivering never makes the engine wait: ``emit`` only queues.  Each subscription has
a queue of its own (bounded: past QUEUE_SIZE events waiting, new ones are dropped
and that is logged) drained by a task of its own, in the order the events were
emitted; so a slow callback delays only its own later events, and one that raises
is logged with its traceback and called again with the next event.
"""
import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ..exceptions import InvalidInputError
from ..ids import iso, now_ms

log = logging.getLogger(__name__)

# every event, with the fields its payload has besides event, at, tenant_id and task_id
EVENTS = {
    "task.submitted": ("pipeline_id", "owner_id"),
    "task.paused": (),
    "task.resumed": (),
    "task.modified": ("rerun",),
    "task.cancelled": (),
    "task.succeeded": (),
    "task.failed": ("error",),
    "step.started": ("step_name", "attempt"),
    "step.succeeded": ("step_name", "attempt", "output_version"),
    "step.retrying": ("step_name", "attempt", "error", "traceback", "retry_delay"),
    "step.failed": ("step_name", "attempt", "error", "traceback"),
    "step.waiting": ("step_name", "attempt", "waiting_for"),
    "step.skipped": ("step_name", "reason"),
}
ALL = "*"  # subscribes to every event
QUEUE_SIZE = 10_000  # events waiting for one subscription at most
DRAIN_SECONDS = 5.0  # a stopping service lets callbacks finish what is queued for at most this long

Event = dict[str, Any]
Callback = Callable[[Event], Any]


class Subscription:
    """One callback and the events waiting for it, delivered one at a time by a task of its own."""

    def __init__(self, event: str, callback: Callback) -> None:
        self.event = event
        self.callback = callback
        self.queue: deque[Event] = deque()
        self.task: asyncio.Task | None = None
        self.dropped = 0

    def push(self, event: Event) -> None:
        if len(self.queue) >= QUEUE_SIZE:
            if not self.dropped:
                log.warning("pipeline events: callback %r is %d events behind; new events are dropped until it "
                            "catches up", self.callback, len(self.queue))
            self.dropped += 1
            return
        self.queue.append(event)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._deliver(), name="pipeline-events")

    async def _deliver(self) -> None:
        while self.queue:
            await self._call(self.queue.popleft())
        if self.dropped:
            log.warning("pipeline events: %d events were dropped for callback %r", self.dropped, self.callback)
            self.dropped = 0

    async def _call(self, event: Event) -> None:
        try:
            result = self.callback(event)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # ours: the service is stopping
            log.exception("pipeline event callback %r cancelled itself on %s", self.callback, event["event"])
        except Exception:
            log.exception("pipeline event callback %r failed on %s of task %s", self.callback, event["event"],
                          event["task_id"])


class Events:
    """The event bus of one service: subscriptions, and the events the engine emits to them."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, list[Subscription]] = {}

    def on(self, event: str, callback: Callback) -> Callback:
        """Call ``callback(event_dict)`` (a function or a coroutine function) after each ``event``
        (a name of EVENTS, or "*" for all of them); returns the callback."""
        if not isinstance(event, str) or (event not in EVENTS and event != ALL):
            shown = repr(event)[:60] if isinstance(event, str) else type(event).__name__
            raise InvalidInputError(f"event must be one of {', '.join(EVENTS)} or '*', got {shown}")
        if not callable(callback):
            raise InvalidInputError(f"the callback for event {event!r} is not callable: {callback!r}"[:200])
        self._subscriptions.setdefault(event, []).append(Subscription(event, callback))
        return callback

    def off(self, event: str, callback: Callback) -> None:
        """Stop calling ``callback`` for ``event`` (events already queued for it are still delivered)."""
        subscriptions = self._subscriptions.get(event, [])
        subscriptions[:] = [s for s in subscriptions if s.callback is not callback]

    def wanted(self, name: str) -> bool:
        return bool(self._subscriptions.get(name) or self._subscriptions.get(ALL))

    def at_commit(self, tx: Any, name: str, tenant_id: str, task_id: str, **fields: Any) -> None:
        """Emit the event once ``tx`` has committed (never if it rolls back)."""
        if self.wanted(name):  # nobody listens: not even a callback to keep
            tx.on_commit(lambda: self.emit(name, tenant_id, task_id, **fields))

    def emit(self, name: str, tenant_id: str, task_id: str, **fields: Any) -> None:
        """Queue the event for its subscriptions (never waits)."""
        if not self.wanted(name):
            return
        event = {"event": name, "at": iso(now_ms()), "tenant_id": tenant_id, "task_id": task_id, **fields}
        for subscription in self._subscriptions.get(name, []) + self._subscriptions.get(ALL, []):
            subscription.push(dict(event))  # a copy each: one callback changing it changes nothing for another

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Let the callbacks handle what is queued for up to ``timeout`` seconds; then what is
        still queued is dropped (and logged), and the callbacks still running are cancelled."""
        busy = {s.task: s for subs in self._subscriptions.values() for s in subs if s.task and not s.task.done()}
        if not busy:
            return
        _, late = await asyncio.wait(busy, timeout=timeout)
        for task in late:
            busy[task].queue.clear()
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning("pipeline events: %d callback(s) still busy after %ss; their queued events are dropped",
                        len(late), timeout)
