"""Cost of one task by DAG size (issue #18: it was quadratic): 1,000 / 5,000 / 10,000 steps.

Two shapes, no-op handlers, one task at a time on one service:
* chain — s0 -> s1 -> ... (every finish makes the next step ready: the finish path);
* wide  — one root, n-2 parallel steps, one sink depending on all of them (fan-out, then a
  fan-in whose readiness is checked as each of the n-2 steps finishes).
Reported: the task's time from submit to done, steps/s, and the time per step as a ratio
to the 1,000-step DAG of the same shape, measured in the same run (1.0: linear; the
quadratic engine's ratio grew with n). Sizes are interleaved over the rounds; medians.
Run: python bench/dag_size_bench.py [--sizes 1000,5000,10000] [--rounds 1] [--backends mysql,sqlite]
"""
import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import MYSQL_URL, ensure_mysql_database, median  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id  # noqa: E402

STEP_TYPE = "dag-size-noop"


async def noop(tenant_id, task_id, step_name, input_data, config):
    return {}


def chain(n):
    return [{"step_name": f"s{i}", "step_type": STEP_TYPE, **({"depends_on": [f"s{i - 1}"]} if i else {})}
            for i in range(n)]


def wide(n):
    middle = [f"m{i}" for i in range(n - 2)]
    return ([{"step_name": "root", "step_type": STEP_TYPE}]
            + [{"step_name": m, "step_type": STEP_TYPE, "depends_on": ["root"]} for m in middle]
            + [{"step_name": "sink", "step_type": STEP_TYPE, "depends_on": middle}])


SHAPES = {"chain": chain, "wide": wide}


async def one_task(service, pipeline_id, timeout):
    tenant = "dag-" + new_id()[:8]
    started = time.perf_counter()
    task = await service.submit(tenant, pipeline_id, "bench", "size", {})
    while (await service.storage.probe("count_tasks", tenant_id=tenant, pipeline_id=None,
                                       status="succeeded"))[0]["n"] < 1:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"task {task['id']} of {pipeline_id} unfinished after {timeout}s")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def run_backend(database, sizes, rounds, timeout=600):
    service = PipelineService(database, concurrency=64, poll_interval=1.0)
    service.register_handler(STEP_TYPE, noop)
    await service.storage.create_missing_tables(include_reference=True)
    await service.start()
    for shape, make in SHAPES.items():
        for n in sizes:
            await service.define_pipeline(f"{shape}-{n}", make(n))
    samples = {(shape, n): [] for shape in SHAPES for n in sizes}
    for _ in range(rounds):  # interleaved: every shape and size once per round
        for shape in SHAPES:
            for n in sizes:
                samples[(shape, n)].append(await one_task(service, f"{shape}-{n}", timeout))
    await service.stop()
    await service.storage.close()
    results = {}
    for shape in SHAPES:
        base = median(samples[(shape, sizes[0])]) / sizes[0]
        for n in sizes:
            seconds = median(samples[(shape, n)])
            results[f"{shape}-{n}"] = {"seconds": seconds, "steps_per_s": n / seconds,
                                       "per_step_ratio": seconds / n / base}
    return results


def measure(backends=("mysql", "sqlite"), sizes=(1000, 5000, 10000), rounds=1):
    out = {}
    for backend in backends:
        database = ensure_mysql_database(MYSQL_URL) if backend == "mysql" else \
            f"sqlite:///{tempfile.mkdtemp()}/bench.db"
        out[backend] = asyncio.run(run_backend(database, list(sizes), rounds))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backends", default="mysql,sqlite")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = measure(args.backends.split(","), sizes, args.rounds)
    print(f"one task at a time, no-op handlers, medians of {args.rounds} round(s); ratio: time per step "
          f"against the {sizes[0]:,}-step DAG of the same shape (1.0 = linear)")
    print(f"{'backend':8} {'DAG':>12} {'task s':>9} {'steps/s':>9} {'ratio':>7}")
    for backend, rows in results.items():
        for name, r in rows.items():
            print(f"{backend:8} {name:>12} {r['seconds']:9.2f} {r['steps_per_s']:9.0f} {r['per_step_ratio']:7.2f}")
    return results


if __name__ == "__main__":
    main()
