"""A process that dies in the middle of a tick (for tests/test_schedule_processes.py).

It fires the due ticks of --db like an executor's poll, but stops inside the tick's
transaction once the task's rows are written (sent, not committed): it prints
``ticked <task id>`` and waits to be killed (kill -9), holding the schedule's row lock.
"""
import argparse
import asyncio

from pipeline_service import PipelineService


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    args = parser.parse_args()

    async def run():
        service = PipelineService(args.db, autostart=False, require_handlers=False)
        write_task = service.tasks.write_task

        async def write_then_hang(tx, new, require_handlers=True):
            row = await write_task(tx, new, require_handlers)
            # a statement sends the deferred writes: the task is in the database, uncommitted
            await tx.fetch_all("tasks_status", task_ids=[row["id"]], tenant_ids=[new.tenant_id])
            print("ticked", row["id"], flush=True)
            await asyncio.Event().wait()  # until killed
        service.tasks.write_task = write_then_hang
        await service.schedules.fire_due()

    asyncio.run(run())


if __name__ == "__main__":
    main()
