"""A test host in the style of a real one: its init function wires the module in one
line and registers a long step, nothing else — no call to the engine at start-up.

    python app/host.py -w <workdir> -p <port>

Its handler appends ``start <pid> <task> <step>`` / ``end ...`` lines to the file
named by the environment variable DEPLOY_EVENTS (O_APPEND writes are atomic).
"""
import asyncio
import os

from ahserver.serverenv import ServerEnv
from ahserver.webapp import webapp

import pipeline_service
from pipeline_service.init import load_pipeline_service


def record(event, task_id, step_name):
    fd = os.open(os.environ["DEPLOY_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {os.getpid()} {task_id} {step_name}\n".encode())
    finally:
        os.close(fd)


async def slow(tenant_id, task_id, step_name, input_data, config):
    record("start", task_id, step_name)
    await asyncio.sleep(float(config["seconds"]))
    record("end", task_id, step_name)
    return {"slept": config["seconds"], "pid": os.getpid()}


def init():
    env = ServerEnv()
    env.get_module_dbname = lambda module: "pipeline"
    load_pipeline_service()
    pipeline_service.register_handler("deploy.slow", slow)


if __name__ == "__main__":
    webapp(init)
