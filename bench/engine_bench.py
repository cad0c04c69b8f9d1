"""Engine throughput and latency: a 5-step diamond DAG with no-op handlers.

    a -> (b, c) -> d -> e

For each backend, three runs on one service:
* light: 20 tasks, one at a time (each waited for) — latency without queueing;
* stream: --tasks tasks submitted one after another (each submit awaited, as
  requests of a host arrive), all running at once as they come;
* burst: --tasks tasks submitted all at once (concurrent submits, as the DBOS peer
  starts its workflows), then all run.
For stream and burst: steps/s from the first submit until all succeed. For all
three, from the stored step times: the median engine overhead per step (claim to
committed output, handler time ~0) and the median delay from a step's last
dependency finishing to the step starting; for light, also the task's time from
submit to done / 5 steps (the measure the DBOS peer reports); for burst, the CPU
time per step of this process and of the local MariaDB server (the engine's cost,
not its latency). The storage baseline (one committed
insert+select transaction, raw aiomysql vs ours) is measured in the same run.
Goals (bench/README.md, MariaDB, one process): >= 1,500 steps/s; overhead < 2 ms;
successor start < 5 ms.
Run: python bench/engine_bench.py [--tasks 300] [--backends mysql,sqlite]
"""
import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import diamond, MYSQL_URL, ensure_mysql_database, median, server_cpu_seconds  # noqa: E402
from bench import storage_bench  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id  # noqa: E402

DIAMOND = diamond("bench-noop")


async def noop(tenant_id, task_id, step_name, input_data, config):
    return {}


async def wait_all(service, tenant, n, timeout=600):
    deadline = time.monotonic() + timeout
    while (await service.storage.probe("count_tasks", tenant_id=tenant, pipeline_id=None,
                                       status="succeeded"))[0]["n"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError("tasks did not finish")
        await asyncio.sleep(0.02)


async def step_times(service, tenant, task_ids):
    overhead, delay = [], []
    for task_id in task_ids:
        async with service.storage.transaction() as tx:
            steps = {s["step_name"]: s for s in await tx.fetch_all("get_steps", tenant_id=tenant, task_id=task_id)}
        for s in steps.values():
            overhead.append(s["finished_at"] - s["started_at"])
            deps = [steps[d] for d in ("a", "b", "c", "d") if d in (s["depends_on"] or "")]
            if deps:
                delay.append(s["started_at"] - max(d["finished_at"] for d in deps))
    return overhead, delay


async def task_times(service, tenant, task_ids):
    """Each task's time from submit to its last step's commit (ms)."""
    times = []
    for task_id in task_ids:
        async with service.storage.transaction() as tx:
            task = await tx.fetch_one("get_task", tenant_id=tenant, task_id=task_id)
        times.append(task["finished_at"] - task["created_at"])
    return times


async def submit_one_after_another(service, tenant, pipeline_id, tasks):
    return [(await service.submit(tenant, pipeline_id, "bench", "stream", {"i": i}))["id"] for i in range(tasks)]


async def submit_all_at_once(service, tenant, pipeline_id, tasks):
    submitted = await asyncio.gather(*(service.submit(tenant, pipeline_id, "bench", "burst", {"i": i})
                                       for i in range(tasks)))
    return [task["id"] for task in submitted]


async def loaded_run(service, pipeline_id, tasks, submit):
    tenant = "bench-" + new_id()[:8]
    server_cpu, cpu, started = server_cpu_seconds(), time.process_time(), time.perf_counter()
    ids = await submit(service, tenant, pipeline_id, tasks)
    await wait_all(service, tenant, tasks)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    server_cpu = server_cpu_seconds() - server_cpu if server_cpu is not None else float("nan")
    overhead, delay = await step_times(service, tenant, ids)
    steps = tasks * len(DIAMOND)
    return {"steps_per_s": steps / elapsed, "overhead": median(overhead), "delay": median(delay),
            "cpu_ms": cpu * 1000 / steps, "server_cpu_ms": server_cpu * 1000 / steps}


async def run_backend(database, tasks, concurrency):
    service = PipelineService(database, concurrency=concurrency, poll_interval=1.0)
    service.register_handler("bench-noop", noop)
    await service.storage.create_missing_tables(include_reference=True)
    await service.start()
    pipeline_id = "bench-diamond"
    await service.define_pipeline(pipeline_id, DIAMOND)
    light_tenant = "bench-light-" + new_id()[:8]
    light_ids = []
    for _ in range(20):
        task = await service.submit(light_tenant, pipeline_id, "bench", "light", {})
        await service.wait(light_tenant, task["id"], interval=0.005)
        light_ids.append(task["id"])
    light_overhead, light_delay = await step_times(service, light_tenant, light_ids)
    light_task_ms = await task_times(service, light_tenant, light_ids)
    stream = await loaded_run(service, pipeline_id, tasks, submit_one_after_another)
    burst = await loaded_run(service, pipeline_id, tasks, submit_all_at_once)
    await service.stop()
    return {"steps_per_s": burst["steps_per_s"], "steps_per_s_stream": stream["steps_per_s"],
            "overhead_light": median(light_overhead), "delay_light": median(light_delay),
            "step_time_light": median(light_task_ms) / len(DIAMOND),
            "overhead_stream": stream["overhead"], "delay_stream": stream["delay"],
            "overhead_burst": burst["overhead"], "delay_burst": burst["delay"],
            "cpu_ms_burst": burst["cpu_ms"], "server_cpu_ms_burst": burst["server_cpu_ms"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="mysql,sqlite")
    args = parser.parse_args(argv)
    results = {}
    for backend in args.backends.split(","):
        if backend == "mysql":
            database = ensure_mysql_database(MYSQL_URL)
        else:
            database = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
        results[backend] = asyncio.run(run_backend(database, args.tasks, args.concurrency))
    baseline = asyncio.run(storage_bench.measure(5, 40)) if "mysql" in results else None
    print(f"diamond DAG (5 steps, no-op handlers), {args.tasks} tasks, concurrency {args.concurrency}; "
          "per step, medians in ms: overhead (claim to committed output) / successor start delay")
    print(f"{'backend':8} {'burst steps/s':>14} {'stream steps/s':>15} {'light':>11} {'stream':>11} {'burst':>11}")
    for backend, r in results.items():
        print(f"{backend:8} {r['steps_per_s']:14.0f} {r['steps_per_s_stream']:15.0f}"
              + "".join(f" {r['overhead_' + k]:5.1f}/{r['delay_' + k]:<5.1f}" for k in ("light", "stream", "burst")))
        print(f"{'':8} CPU per step in the burst: this process {r['cpu_ms_burst']:.2f} ms"
              + (f", MariaDB server {r['server_cpu_ms_burst']:.2f} ms" if backend == "mysql" else ""))
    if baseline:
        print(f"storage baseline (MariaDB, median): raw aiomysql tx {baseline['raw']:.3f} ms, "
              f"ours {baseline['ours']:.3f} ms, ratio {baseline['ours'] / baseline['raw']:.2f}x")
        print(f"goal: >= 1500 steps/s on MariaDB -> {results['mysql']['steps_per_s'] / 1500:.2f} of goal")
    return results


if __name__ == "__main__":
    main()
