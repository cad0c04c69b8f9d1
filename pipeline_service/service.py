"""The app facade: one PipelineService = one database + the engine's components + one executor + its handlers.

It composes the engine (docs/ARCHITECTURE.md): one cache object handed to the
components that need it; ``tasks`` (define, submit), ``reads``, ``control`` (pause,
resume, cancel, modify), and the executor with its ``claimer`` and ``recorder``.

Public methods validate their arguments (a clear ``InvalidInputError`` and no
write on bad input), scope everything by tenant, and start the executor by
themselves the first time they are called inside a running event loop.
"""
import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .json_objects import MAX_JSON_BYTES, check_json_object, check_max_bytes
from .engine.executor import Executor
from .exceptions import InvalidInputError, WaitTimeoutError
from .ids import MAX_TITLE, check_id, check_name, check_text
from .engine.caches import ARTIFACT_CACHE_BYTES, EngineCaches
from .engine.purge import DEFAULT_BATCH, MAX_BATCH, Purger, Retention, check_keep_versions, check_older_than, \
    check_retention
from .engine.records import ContentOptions
from .store.packing import DEFAULT_COMPRESS_ABOVE, check_threshold
from .engine.claiming import Claimer
from .engine.control import Control
from .engine.events import DRAIN_SECONDS, Callback, Events
from .engine.handlers import HandlerRegistry
from .engine.plans import Plans
from .engine.progress import Progress
from .engine.reads import Reads
from .engine.recording import Recorder
from .engine.tasks import Tasks
from .engine.waiting import Waiting
from .engine.records import NewTask
from .engine.schedules import ScheduleSpec, Schedules
from .ticks import CatchUp, Overlap, Timing, check_cron, check_every, host_zone_name, parse_at
from .ticks import zone as check_zone
from .priority import check_priority
from .dag import MAX_INT, check_timeouts, check_updates, check_whole, definition_rows, step_from_row
from .steps import StepOptions, builtins
from .status import TASK_STATUSES, TERMINAL_TASK_STATUSES, TaskStatus
from .store.storage import Storage

MAX_ROWS = 500
MAX_PAGE = 1_000_000  # far past any real listing; keeps the OFFSET well inside the integer types
MAX_DESCRIPTION = 65_535  # characters of a pipeline's description
MAX_KEY = 64  # characters of an idempotency key: the model's str(64)

T = TypeVar("T")


def require_task(tenant_id: object, task_id: object) -> None:
    check_id(tenant_id, "tenant_id")
    check_id(task_id, "task_id")


def require_schedule(tenant_id: object, schedule_id: object) -> None:
    check_id(tenant_id, "tenant_id")
    check_id(schedule_id, "schedule_id")


def choice(value: object, kind: Any, what: str) -> str:
    """``value`` if it is one of the StrEnum ``kind``'s values, else an InvalidInputError listing them."""
    if not isinstance(value, str) or value not in set(kind):
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"{what} must be one of {', '.join(kind)}, got {shown}")
    return value


def require_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be True or False, got {type(value).__name__}")
    return value


def owned(value: object, kind: type[T], what: str) -> T:
    """The service's own ``kind`` (its handler registry, its event bus): a fresh one unless the
    caller hands one in (api: the default service's, which outlive it)."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise InvalidInputError(f"{what} must be {article} {kind.__name__} or None, got {type(value).__name__}")
    return value


class PipelineService:
    def __init__(self, database: str | dict[str, Any] | Storage, concurrency: int = 64,
                 tenant_concurrency: int | None = None, poll_interval: float = 1.0, lease_seconds: float = 30.0,
                 max_crashes: int = 3, create_schema: bool = False, autostart: bool = True,
                 require_handlers: bool = True, sync_threads: int = 32,
                 handlers: HandlerRegistry | None = None, events: Events | None = None,
                 timezone: str | None = None, shell_root: str | None = None,
                 http_allow: Sequence[str] | None = None, max_content_bytes: int = MAX_JSON_BYTES,
                 compress_above: int | None = DEFAULT_COMPRESS_ABOVE, cache_bytes: int = ARTIFACT_CACHE_BYTES,
                 retention: dict[str, Any] | Retention | None = None) -> None:
        for flag, what in ((create_schema, "create_schema"), (autostart, "autostart"),
                           (require_handlers, "require_handlers")):
            require_flag(flag, what)
        self.step_options = StepOptions.checked(shell_root, http_allow)
        # artifact contents: the one size limit, and compression above a threshold
        self.content = ContentOptions(check_max_bytes(max_content_bytes), check_threshold(compress_above))
        retention_policy = check_retention(retention)  # what a purge applies when not told (engine/purge.py)
        self.handlers = owned(handlers, HandlerRegistry, "handlers")  # its step types: it claims only these
        # the built-in step types (steps/), under whatever handlers the host registers
        self.handlers.set_builtins(builtins(self.step_options))
        self.storage = database if isinstance(database, Storage) else Storage.from_description(database)
        self.events = owned(events, Events, "events")  # lifecycle events for the host: on(), off()
        self.caches = EngineCaches(cache_bytes)
        plans = Plans(self.caches)
        progress = Progress(plans, self.caches, self.events, self.content)
        self.tasks = Tasks(self.storage, self.caches, progress, self.handlers, self.events)
        self.reads = Reads(self.storage)
        self.control = Control(self.storage, plans, progress, self.events)
        self.purger = Purger(self.storage, retention_policy)
        self.claimer = Claimer(self.storage, self.caches)
        self.schedules = Schedules(self.storage, self.tasks, self.control)
        # schedules' default zone: the host's configured one, else the machine's
        self.timezone = host_zone_name() if timezone is None else str(check_zone(timezone).key)
        self.waiting = Waiting(self.storage, plans, progress, self.caches, self.tasks)
        self.recorder = Recorder(self.storage, plans, progress, self.caches, self.events, self.waiting)
        self.executor = Executor(self.storage, self.claimer, self.recorder, self.handlers, self.events,
                                 self.waiting, concurrency=concurrency,
                                 tenant_concurrency=tenant_concurrency, poll_interval=poll_interval,
                                 lease_seconds=lease_seconds, max_crashes=max_crashes, sync_threads=sync_threads,
                                 ticker=self.schedules, content=self.content)
        self.create_schema = create_schema
        self.autostart = autostart  # False: the host starts the executor itself (start())
        # False for a process that only submits while other processes run the steps
        self.require_handlers = require_handlers
        self._opened = False

    async def _ready(self) -> None:
        if not self._opened:
            await self.storage.open()
            if self.create_schema:
                await self.storage.create_missing_tables()
            self._opened = True
        if self.autostart and not self.executor.started:
            self.executor.start()

    async def start(self) -> "PipelineService":
        """Open the database and start the executor (also done by the first call, if autostart)."""
        await self._ready()
        self.executor.start()
        return self

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully: no new claims, running steps get ``timeout`` seconds to finish."""
        await self.executor.stop(timeout=timeout)
        await self.events.drain(min(timeout, DRAIN_SECONDS))  # callbacks may still read the database
        await self.storage.close()
        self._opened = False

    # ---- handlers ----------------------------------------------------------
    def register_handler(self, step_type: str, fn: Callable) -> Callable:
        """Run steps of ``step_type`` with ``fn`` in this service only; registering again replaces."""
        self.handlers.register(step_type, fn)
        self.claimer.step_types_changed()
        self.executor.wake()  # ready steps of this type are claimed now, not at the next poll
        return fn

    def unregister_handler(self, step_type: str) -> None:
        """This service claims no more steps of ``step_type`` (those running here finish)."""
        self.handlers.unregister(step_type)

    # ---- lifecycle events (README, "Events") ----------------------------------
    def on(self, event: str, callback: Callback) -> Callback:
        """Call ``callback(event_dict)`` after each ``event`` this process commits ("*": every event);
        a coroutine function is awaited. Never blocks the engine; a callback that raises is logged."""
        return self.events.on(event, callback)

    def off(self, event: str, callback: Callback) -> None:
        self.events.off(event, callback)

    # ---- pipelines ---------------------------------------------------------
    async def define_pipeline(self, pipeline_id: str, steps: Sequence[dict[str, Any]], name: str | None = None,
                              description: str | None = None) -> dict[str, Any]:
        rows = definition_rows(check_id(pipeline_id, "pipeline_id"), steps)
        check_timeouts(map(step_from_row, rows), self.handlers.waits)  # a year only for a type that waits here
        if name is not None:
            check_text(name, "name", MAX_TITLE)
        if description is not None:
            check_text(description, "description", MAX_DESCRIPTION)
        await self._ready()
        return await self.tasks.define_pipeline(pipeline_id, rows, name=name, description=description)

    # ---- the API's operations (README, API reference) --------------------------------------------------
    async def submit(self, tenant_id: str, pipeline_id: str, owner_id: str, title: str | None = None,
                     params: dict[str, Any] | None = None, idempotency_key: str | None = None,
                     priority: int | None = None) -> dict[str, Any]:
        """Create a task; with ``idempotency_key``, at most one per tenant and key: a submit with a
        key already used returns that task (docs/SEMANTICS.md, "Idempotent submits")."""
        check_id(tenant_id, "tenant_id")
        check_id(pipeline_id, "pipeline_id")
        check_id(owner_id, "owner_id")
        if title is not None:
            check_text(title, "title", MAX_TITLE)
        params = {} if params is None else check_json_object(params, "params", max_bytes=self.content.max_bytes)
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key", MAX_KEY)
        new = NewTask(tenant_id, pipeline_id, owner_id, title or "", params, check_priority(priority),
                      idempotency_key=idempotency_key)
        await self._ready()
        summary = await self.tasks.submit(new, self.require_handlers)
        self.executor.wake()
        return summary

    async def list(self, tenant_id: str, pipeline_id: str | None = None, status: str | None = None, page: int = 1,
                   rows: int = 20) -> dict[str, Any]:
        check_id(tenant_id, "tenant_id")
        if pipeline_id is not None:
            check_id(pipeline_id, "pipeline_id")
        if status is not None and (not isinstance(status, str) or status not in TASK_STATUSES):
            shown = repr(status)[:40] if isinstance(status, str) else type(status).__name__
            raise InvalidInputError(f"status must be one of {', '.join(TASK_STATUSES)}, got {shown}")
        check_whole(page, "page", 1, MAX_PAGE)
        check_whole(rows, "rows", 1, MAX_ROWS)
        await self._ready()
        return await self.reads.list_tasks(tenant_id, pipeline_id, status, page, rows)

    async def detail(self, tenant_id: str, task_id: str) -> dict[str, Any]:
        require_task(tenant_id, task_id)
        await self._ready()
        return await self.reads.task_detail(tenant_id, task_id)

    async def node(self, tenant_id: str, task_id: str, step_name: str, version: int | None = None,
                   input_version: int | None = None) -> dict[str, Any]:
        """A step with its output ``version`` (default: the latest) and an input: ``input_version``,
        else the one that produced that output; and every version of both, with its lineage."""
        require_task(tenant_id, task_id)
        check_name(step_name, "step_name")
        for value, name in ((version, "version"), (input_version, "input_version")):
            if value is not None:
                check_whole(value, name, 1, MAX_INT)
        await self._ready()
        return await self.reads.node(tenant_id, task_id, step_name, version, input_version)

    async def pause(self, tenant_id: str, task_id: str) -> dict[str, Any]:
        """Pause the task; its delegate steps' child tasks are paused too, in the same transaction
        (docs/SEMANTICS.md, "Waiting steps")."""
        require_task(tenant_id, task_id)
        await self._ready()
        return (await self.control.pause(tenant_id, task_id)).summary

    async def resume(self, tenant_id: str, task_id: str) -> dict[str, Any]:
        """Resume the task, and the child tasks of its delegate steps that are paused."""
        require_task(tenant_id, task_id)
        await self._ready()
        result = await self.control.resume(tenant_id, task_id)
        self.executor.wake()
        return result.summary

    async def cancel(self, tenant_id: str, task_id: str) -> dict[str, Any]:
        """Cancel the task, and the child tasks of its delegate steps that have not ended."""
        require_task(tenant_id, task_id)
        await self._ready()
        result = await self.control.cancel(tenant_id, task_id)
        self.executor.interrupt(result.stop)
        return result.summary

    async def signal(self, tenant_id: str, task_id: str, step_name: str, payload: dict[str, Any],
                     actor: str | None = None) -> dict[str, Any]:
        """Deliver ``payload`` to step ``step_name``, waiting for a signal (an approval: ``{"decision":
        ...}``, one of its choices); ``actor``: who sends it (an endpoint: the logged-in user).  The
        step wakes with it; a step not waiting for a signal, or a decision it does not take, is
        refused and nothing changes; of two signals racing, exactly one wins.  Returns the task summary."""
        require_task(tenant_id, task_id)
        check_name(step_name, "step_name")
        check_json_object(payload, "payload")
        if actor is not None:
            check_text(actor, "actor", MAX_TITLE)
        await self._ready()
        result = await self.control.signal(tenant_id, task_id, step_name, payload, actor)
        self.executor.wake()
        return result.summary

    async def modify(self, tenant_id: str, task_id: str, updates: dict[str, dict[str, Any]],
                     rerun_from: str | None = None) -> dict[str, Any]:
        require_task(tenant_id, task_id)
        check_updates(updates, rerun_from, self.content.max_bytes)
        await self._ready()
        result = await self.control.modify(tenant_id, task_id, updates, rerun_from)
        self.executor.interrupt(result.stop)  # the cancelled children's handlers too
        self.executor.wake()
        return result.summary

    async def purge(self, tenant_id: str, older_than: float | None = None, keep_versions: int | None = None,
                    dry_run: bool = False, batch: int = DEFAULT_BATCH) -> dict[str, Any]:
        """Delete ``tenant_id``'s finished tasks finished more than ``older_than`` days ago, and of its
        other finished tasks every artifact version older than each step's newest ``keep_versions``
        (engine/purge.py); a value not given comes from the retention policy (the tenant's, else the
        global one).  Running, paused and pending tasks are never touched.  Returns what it deleted
        (``dry_run``: what it would delete): ``tasks`` (ids), ``steps``, ``artifacts`` (counts)."""
        check_id(tenant_id, "tenant_id")
        policy = self.purger.policy(tenant_id, check_older_than(older_than), check_keep_versions(keep_versions))
        require_flag(dry_run, "dry_run")
        check_whole(batch, "batch", 1, MAX_BATCH)
        if policy.older_than is None and policy.keep_versions is None:
            raise InvalidInputError(f"nothing to purge for tenant {tenant_id!r}: give older_than (days) and/or "
                                    "keep_versions, or configure a retention policy (the retention option)")
        await self._ready()
        return await self.purger.purge(tenant_id, policy, dry_run, batch)

    async def wait(self, tenant_id: str, task_id: str, timeout: float = 60.0, interval: float = 0.05) -> dict[str, Any]:
        """Wait until the task is terminal (or paused); returns its detail. For scripts and tests."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            detail = await self.detail(tenant_id, task_id)
            if detail["status"] in TERMINAL_TASK_STATUSES or detail["status"] == TaskStatus.PAUSED:
                return detail
            if asyncio.get_running_loop().time() > deadline:
                raise WaitTimeoutError(f"task {task_id} still {detail['status']} after {timeout}s")
            await asyncio.sleep(interval)

    # ---- schedules (docs/SEMANTICS.md, "Schedules") ----------------------------------------
    async def schedule_create(self, tenant_id: str, pipeline_id: str, owner_id: str, cron: str | None = None,
                              every: int | None = None, at: Any = None, params: dict[str, Any] | None = None,
                              title: str | None = None, timezone: str | None = None, overlap: str = "skip",
                              catch_up: str = "none", priority: int | None = None) -> dict[str, Any]:
        """Submit ``pipeline_id`` at every tick of ``cron`` (5 fields, in ``timezone``), every
        ``every`` seconds, or once ``at`` a time (exactly one of them); the schedule, with its id."""
        check_id(tenant_id, "tenant_id")
        check_id(pipeline_id, "pipeline_id")
        check_id(owner_id, "owner_id")
        given = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value is not None]
        if len(given) != 1:
            raise InvalidInputError("a schedule needs exactly one of cron, every and at, got "
                                    + (", ".join(given) if given else "none"))
        zone_name = self.timezone if timezone is None else str(check_zone(timezone).key)
        timing = Timing(check_cron(cron) if cron is not None else None,
                        check_every(every) if every is not None else None,
                        parse_at(at, check_zone(zone_name)) if at is not None else None, zone_name)
        if title is not None:
            check_text(title, "title", MAX_TITLE)
        params = {} if params is None else check_json_object(params, "params", max_bytes=self.content.max_bytes)
        spec = ScheduleSpec(tenant_id, pipeline_id, owner_id, title or "", params, timing,
                            choice(overlap, Overlap, "overlap"), choice(catch_up, CatchUp, "catch_up"),
                            check_priority(priority))
        await self._ready()
        return await self.schedules.create(spec)

    async def schedule_list(self, tenant_id: str, page: int = 1, rows: int = 20) -> dict[str, Any]:
        """A tenant's schedules, newest first, each with its last runs."""
        check_id(tenant_id, "tenant_id")
        check_whole(page, "page", 1, MAX_PAGE)
        check_whole(rows, "rows", 1, MAX_ROWS)
        await self._ready()
        return await self.schedules.list(tenant_id, page, rows)

    async def schedule_pause(self, tenant_id: str, schedule_id: str) -> dict[str, Any]:
        require_schedule(tenant_id, schedule_id)
        await self._ready()
        return await self.schedules.pause(tenant_id, schedule_id)

    async def schedule_resume(self, tenant_id: str, schedule_id: str) -> dict[str, Any]:
        require_schedule(tenant_id, schedule_id)
        await self._ready()
        return await self.schedules.resume(tenant_id, schedule_id)

    async def schedule_delete(self, tenant_id: str, schedule_id: str) -> dict[str, Any]:
        require_schedule(tenant_id, schedule_id)
        await self._ready()
        return await self.schedules.delete(tenant_id, schedule_id)

    async def schedule_run_now(self, tenant_id: str, schedule_id: str) -> dict[str, Any]:
        """A task of the schedule now, besides its ticks; the task's summary."""
        require_schedule(tenant_id, schedule_id)
        await self._ready()
        summary = await self.schedules.run_now(tenant_id, schedule_id)
        self.executor.wake()
        return summary
