"""A minimal ahserver host for pipeline_service: the one-line integration, and handlers.

    python app/host.py -w examples/host -p 9080

conf/config.json names the database ('databases' -> 'pipeline'); get_module_dbname
maps the module to it; the module's endpoints are mounted at /pipeline_service/.
"""
from ahserver.configuredServer import add_startup
from ahserver.serverenv import ServerEnv
from ahserver.webapp import webapp

import pipeline_service
from pipeline_service.demo import PIPELINE_ID, PRODUCTION_LINE, register_demo_handlers
from pipeline_service.init import load_pipeline_service


def get_module_dbname(module):
    return "pipeline"  # the key of conf/config.json 'databases'


async def prepare(app):
    """At start-up: the tables (never dropped) and the sample pipeline definition.
    (The engine itself starts and stops with the server: load_pipeline_service hooks it.)"""
    service = pipeline_service.get_service()
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(PIPELINE_ID, PRODUCTION_LINE, name="article production line")


def init():
    env = ServerEnv()
    env.get_module_dbname = get_module_dbname
    load_pipeline_service()                 # the one line a host needs
    register_demo_handlers(speed=0.05)      # handlers: pipeline_service.register_handler(step_type, fn)
    add_startup(prepare)


if __name__ == "__main__":
    webapp(init)
