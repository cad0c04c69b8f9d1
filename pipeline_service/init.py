"""Host integration: ``load_pipeline_service()`` registers the module into ServerEnv.

Call it from the host's init function (the one given to ``ahserver.webapp.webapp``).
It touches no database and does not build ``DBPools`` (ahserver builds it after the
init function; DBPools is a first-call-wins singleton): the database is looked up
on the first ``pipeline_*`` call, from ``config.json`` ``databases`` and the host's
``get_module_dbname('pipeline_service')``. Calling it twice is harmless.
"""
from ahserver.serverenv import ServerEnv

from . import api
from .endpoints import pipeline_endpoint

FUNCTIONS = {
    "pipeline_submit": api.pipeline_submit,
    "pipeline_list": api.pipeline_list,
    "pipeline_detail": api.pipeline_detail,
    "pipeline_node": api.pipeline_node,
    "pipeline_modify": api.pipeline_modify,
    "pipeline_pause": api.pipeline_pause,
    "pipeline_resume": api.pipeline_resume,
    "pipeline_cancel": api.pipeline_cancel,
    "pipeline_register_handler": api.pipeline_register_handler,
}


def load_pipeline_service():
    env = ServerEnv()
    for name, fn in FUNCTIONS.items():
        env[name] = fn
    env.pipeline_endpoint = pipeline_endpoint  # what the wwwroot/*.dspy files call
    api.use_host_configuration()
    return env
