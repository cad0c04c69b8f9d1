"""Host integration: ``load_pipeline_service()`` registers the module into ServerEnv
and into the host's lifecycle.

Call it from the host's init function (the one given to ``ahserver.webapp.webapp``).
It touches no database and does not build ``DBPools`` (ahserver builds it after the
init function; DBPools is a first-call-wins singleton).  It hooks the server's
lifecycle the ecosystem's way (ahserver's ``add_cleanupctx``): when the server
starts, the database is looked up (config.json ``databases`` and the host's
``get_module_dbname('pipeline_service')``) and the executor starts, so tasks in
flight go on after a deploy without anyone calling; when the server stops (SIGTERM
included) the executor stops gracefully and hands its claims back.  Calling it twice
is harmless.
"""
import logging

from ahserver.configuredServer import add_cleanupctx
from ahserver.serverenv import ServerEnv

from . import api
from .host import log as host_log
from .host.appcodes import code_choices
from .host.endpoints import decision_choices, pipeline_endpoint
from .exceptions import StorageError

log = logging.getLogger(__name__)

FUNCTIONS = {
    "pipeline_submit": api.pipeline_submit,
    "pipeline_list": api.pipeline_list,
    "pipeline_detail": api.pipeline_detail,
    "pipeline_node": api.pipeline_node,
    "pipeline_modify": api.pipeline_modify,
    "pipeline_pause": api.pipeline_pause,
    "pipeline_resume": api.pipeline_resume,
    "pipeline_cancel": api.pipeline_cancel,
    "pipeline_purge": api.pipeline_purge,
    "pipeline_signal": api.pipeline_signal,
    "pipeline_register_handler": api.pipeline_register_handler,
    "pipeline_on": api.pipeline_on,
    "pipeline_off": api.pipeline_off,
    "pipeline_schedule_create": api.pipeline_schedule_create,
    "pipeline_schedule_list": api.pipeline_schedule_list,
    "pipeline_schedule_pause": api.pipeline_schedule_pause,
    "pipeline_schedule_resume": api.pipeline_schedule_resume,
    "pipeline_schedule_delete": api.pipeline_schedule_delete,
    "pipeline_schedule_run_now": api.pipeline_schedule_run_now,
}
_hooked = False


def load_pipeline_service():
    global _hooked
    env = ServerEnv()
    for name, fn in FUNCTIONS.items():
        env[name] = fn
    env.pipeline_endpoint = pipeline_endpoint  # what the wwwroot/*.dspy files call
    env.pipeline_codes = code_choices  # what the wwwroot/*.ui pages fill their status choices from
    env.pipeline_choices = decision_choices  # the buttons of approve.ui
    api.use_host_configuration()
    host_log.use_host_logger()
    if not _hooked:
        add_cleanupctx(engine_lifecycle)
        _hooked = True
    return env


async def engine_lifecycle(app):
    """aiohttp cleanup context: the engine runs while the server runs."""
    service = api.get_service()  # a configuration error stops the start-up, with its message
    try:
        await service.start()
        log.info("pipeline_service started on %s (executor %s)", service.storage.describe(), service.executor.owner)
    except StorageError as exc:  # the database may come back: the executor keeps trying
        log.error("pipeline_service: %s; the executor starts anyway and keeps trying", exc)
        service.executor.start()
    yield
    log.info("pipeline_service stopping: running steps get %ss, then go back to the queue",
             api.stop_timeout())
    await api.shutdown()
    log.info("pipeline_service stopped")
