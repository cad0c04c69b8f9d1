"""A host process for the multi-process tests: the engine on a shared MySQL database.

Handlers append one line per event to --log (O_APPEND writes are atomic):
``<event> <pid> <task_id> <step_name> <monotonic>``, event in start/end/cancelled.
Runs until SIGTERM (graceful stop) or SIGKILL.
"""
import argparse
import asyncio
import logging
import os
import signal
import time

from pipeline_service import PipelineService


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event, task_id, step_name):
        os.write(log_fd, f"{event} {os.getpid()} {task_id} {step_name} {time.time():.3f}\n".encode())

    async def noop(tenant_id, task_id, step_name, input_data, config):
        record("start", task_id, step_name)
        record("end", task_id, step_name)
        return {"pid": os.getpid(), "step": step_name}

    async def slow(tenant_id, task_id, step_name, input_data, config):
        record("start", task_id, step_name)
        try:
            await asyncio.sleep(float(config.get("sleep", 1.0)))
        except asyncio.CancelledError:
            record("cancelled", task_id, step_name)
            raise
        record("end", task_id, step_name)
        return {"pid": os.getpid(), "step": step_name}

    async def run():
        service = PipelineService(args.db, concurrency=args.concurrency, poll_interval=args.poll,
                                  lease_seconds=args.lease)
        service.register_handler("mp-noop", noop)
        service.register_handler("mp-slow", slow)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await service.start()
        print("ready", flush=True)
        await stop.wait()
        await service.stop(timeout=5)

    asyncio.run(run())


if __name__ == "__main__":
    main()
