"""The module-level functions (README, API reference), bound to one default PipelineService.

The default service is built on first use: from ``configure(database=...)`` if the
caller gave one, else from the host's configuration (config.json +
get_module_dbname), else the embedded SQLite file ``pipeline_service.db``.

Its handler registry is kept here, apart from the service: a host registers its
handlers in its init function, before the service exists, and every service that
``configure()`` builds (again after ``shutdown()``) is built with this same registry.
"""
from collections.abc import Callable, Sequence
from typing import Any

from .host import config as host_config
from .dag import check_seconds
from .exceptions import ConfigurationError, InvalidInputError
from .engine.events import Callback, Events
from .engine.handlers import HandlerRegistry
from .service import PipelineService

_service: PipelineService | None = None
_handlers = HandlerRegistry()  # the default service's handlers, whenever it is built
_events = Events()  # the default service's event subscriptions (pipeline_on), whenever it is built
_hosted = False  # set by load_pipeline_service(): then the host must configure the database
DEFAULT_STOP_TIMEOUT = 30.0
MAX_STOP_TIMEOUT = 3600.0  # an hour: a deploy that waits longer is stuck
_stop_timeout = DEFAULT_STOP_TIMEOUT


def use_host_configuration() -> None:
    global _hosted
    _hosted = True


def configure(database: str | dict[str, Any] | None = None, **options: Any) -> PipelineService:
    """Choose the database (and options) of the default service.

    Call before the first pipeline_* call, or after ``await shutdown()``.  Without a
    database: the host's (config.json, whose ``pipeline_service`` entry may hold the
    options, e.g. ``{"concurrency": 32, "stop_timeout": 10}``), else the embedded file.
    """
    global _service, _stop_timeout
    if database is None:
        database = host_config.host_database(required=_hosted) or host_config.EMBEDDED_DEFAULT
        if _hosted:
            options = {**host_config.host_options(), **options}
        options.setdefault("create_schema", database == host_config.EMBEDDED_DEFAULT)
    # the default service's handlers and subscriptions live here: one passed in would be lost by the next configure()
    if "handlers" in options:
        raise ConfigurationError("the default service takes no handlers option: register them with "
                                 "pipeline_service.register_handler(step_type, fn)")
    if "events" in options:
        raise ConfigurationError("the default service takes no events option: subscribe with "
                                 "pipeline_service.pipeline_on(event, callback)")
    try:
        _stop_timeout = float(check_seconds(options.pop("stop_timeout", DEFAULT_STOP_TIMEOUT), "stop_timeout",
                                            maximum=MAX_STOP_TIMEOUT))
    except InvalidInputError as exc:  # a host option: the host's configuration is what is wrong
        raise ConfigurationError(str(exc)) from None
    _service = PipelineService(database, handlers=_handlers, events=_events, **options)
    return _service


def get_service() -> PipelineService:
    return _service if _service is not None else configure()


def stop_timeout() -> float:
    """Seconds a graceful stop lets running steps finish before handing them back."""
    return _stop_timeout


async def shutdown(timeout: float | None = None) -> None:
    """Stop the default service gracefully: running steps get ``timeout`` seconds (default:
    the configured ``stop_timeout``) to finish, then go back to the queue; the database closes."""
    global _service
    if _service is not None:
        service, _service = _service, None
        await service.stop(timeout=_stop_timeout if timeout is None else timeout)


async def pipeline_submit(tenant_id: str, pipeline_id: str, owner_id: str, title: str | None = None,
                          params: dict[str, Any] | None = None, idempotency_key: str | None = None,
                          priority: int | None = None) -> dict[str, Any]:
    return await get_service().submit(tenant_id, pipeline_id, owner_id, title, params,
                                      idempotency_key=idempotency_key, priority=priority)


async def pipeline_schedule_create(tenant_id: str, pipeline_id: str, owner_id: str, cron: str | None = None,
                                   every: int | None = None, at: Any = None, params: dict[str, Any] | None = None,
                                   title: str | None = None, timezone: str | None = None, overlap: str = "skip",
                                   catch_up: str = "none", priority: int | None = None) -> dict[str, Any]:
    return await get_service().schedule_create(tenant_id, pipeline_id, owner_id, cron=cron, every=every, at=at,
                                               params=params, title=title, timezone=timezone, overlap=overlap,
                                               catch_up=catch_up, priority=priority)


async def pipeline_schedule_list(tenant_id: str, page: int = 1, rows: int = 20) -> dict[str, Any]:
    return await get_service().schedule_list(tenant_id, page=page, rows=rows)


async def pipeline_schedule_pause(tenant_id: str, schedule_id: str) -> dict[str, Any]:
    return await get_service().schedule_pause(tenant_id, schedule_id)


async def pipeline_schedule_resume(tenant_id: str, schedule_id: str) -> dict[str, Any]:
    return await get_service().schedule_resume(tenant_id, schedule_id)


async def pipeline_schedule_delete(tenant_id: str, schedule_id: str) -> dict[str, Any]:
    return await get_service().schedule_delete(tenant_id, schedule_id)


async def pipeline_schedule_run_now(tenant_id: str, schedule_id: str) -> dict[str, Any]:
    return await get_service().schedule_run_now(tenant_id, schedule_id)


async def pipeline_list(tenant_id: str, pipeline_id: str | None = None, status: str | None = None, page: int = 1,
                        rows: int = 20) -> dict[str, Any]:
    return await get_service().list(tenant_id, pipeline_id=pipeline_id, status=status, page=page, rows=rows)


async def pipeline_detail(tenant_id: str, task_id: str) -> dict[str, Any]:
    return await get_service().detail(tenant_id, task_id)


async def pipeline_node(tenant_id: str, task_id: str, step_name: str, version: int | None = None,
                        input_version: int | None = None) -> dict[str, Any]:
    return await get_service().node(tenant_id, task_id, step_name, version, input_version)


async def pipeline_modify(tenant_id: str, task_id: str, updates: dict[str, dict[str, Any]],
                          rerun_from: str | None = None) -> dict[str, Any]:
    return await get_service().modify(tenant_id, task_id, updates, rerun_from)


async def pipeline_pause(tenant_id: str, task_id: str) -> dict[str, Any]:
    return await get_service().pause(tenant_id, task_id)


async def pipeline_resume(tenant_id: str, task_id: str) -> dict[str, Any]:
    return await get_service().resume(tenant_id, task_id)


async def pipeline_cancel(tenant_id: str, task_id: str) -> dict[str, Any]:
    return await get_service().cancel(tenant_id, task_id)


async def pipeline_purge(tenant_id: str, older_than: float | None = None, keep_versions: int | None = None,
                         dry_run: bool = False) -> dict[str, Any]:
    """Delete a tenant's old finished tasks and old artifact versions (PipelineService.purge)."""
    return await get_service().purge(tenant_id, older_than=older_than, keep_versions=keep_versions, dry_run=dry_run)


async def pipeline_signal(tenant_id: str, task_id: str, step_name: str, payload: dict[str, Any],
                          actor: str | None = None) -> dict[str, Any]:
    """Wake a step waiting for a signal (an approval: ``{"decision": ...}``); see PipelineService.signal."""
    return await get_service().signal(tenant_id, task_id, step_name, payload, actor)


def register_handler(step_type: str, fn: Callable) -> Callable:
    """Register ``fn`` for ``step_type`` with the default service, built already or not yet."""
    return _handlers.register(step_type, fn)


def pipeline_register_handler(step_type: str, fn: Callable) -> Callable:
    return register_handler(step_type, fn)


def pipeline_on(event: str, callback: Callback) -> Callback:
    """Subscribe ``callback`` to ``event`` (README, "Events") of the default service, built already or not."""
    return _events.on(event, callback)


def pipeline_off(event: str, callback: Callback) -> None:
    _events.off(event, callback)


async def define_pipeline(pipeline_id: str, steps: Sequence[dict[str, Any]], name: str | None = None,
                          description: str | None = None) -> dict[str, Any]:
    return await get_service().define_pipeline(pipeline_id, steps, name=name, description=description)
