"""Throughput with many tenants against a few (issue #18: 2,000 tenants ran at a third of 4).

The same work both ways on MariaDB: --tasks diamond tasks (5 no-op steps each), spread
over 2,000 tenants (one task each) or over 4 tenants (500 each). All tasks are submitted
before the executor starts (by the same service, as a host receives them), so the figure
is the cost of running the steps — claiming fairly over the tenants, running, recording —
and not of submitting: steps/s from the executor's start until every task has succeeded.
The two tenant counts alternate round by round (the machine is noisy); medians, and the
ratio many / few (1.0: tenants cost nothing).
Run: python bench/tenant_bench.py [--tasks 2000] [--rounds 3]
"""
import argparse
import asyncio
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import MYSQL_URL, diamond, ensure_mysql_database, median  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id  # noqa: E402

DIAMOND = diamond("tenant-noop")
TENANT_COUNTS = (4, 2000)
SUBMITS_AT_ONCE = 50  # concurrent submits while the backlog is built


async def noop(tenant_id, task_id, step_name, input_data, config):
    return {}


def succeeded(url, run):
    """Tasks of ``run`` that have succeeded (all tenants: the package reads one tenant at a time)."""
    p = urlsplit(url)
    conn = pymysql.connect(host=p.hostname, port=p.port or 3306, user=p.username or "root",
                           password=p.password or "", db=p.path.lstrip("/"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pipeline_tasks WHERE title = %s AND status = 'succeeded'", (run,))
            return cur.fetchone()[0]
    finally:
        conn.close()


async def one_run(url, tenants, tasks, timeout=300):
    """Steps/s of one service draining ``tasks`` diamond tasks spread over ``tenants`` tenants."""
    run = "run-" + new_id()[:8]
    service = PipelineService(url, concurrency=64, poll_interval=1.0, autostart=False)
    service.register_handler("tenant-noop", noop)
    await service.define_pipeline("tenant-diamond", DIAMOND)
    names = [f"{run}-{i:04d}" for i in range(tenants)]
    for first in range(0, tasks, SUBMITS_AT_ONCE):
        await asyncio.gather(*(service.submit(names[i % tenants], "tenant-diamond", "bench", run)
                               for i in range(first, min(first + SUBMITS_AT_ONCE, tasks))))
    started = time.perf_counter()
    await service.start()
    while await asyncio.to_thread(succeeded, url, run) < tasks:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{tasks} tasks over {tenants} tenants unfinished after {timeout}s")
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    await service.stop()
    return tasks * len(DIAMOND) / elapsed


async def _schema(url):
    service = PipelineService(url, autostart=False)
    await service.storage.create_missing_tables(include_reference=True)
    await service.storage.close()


def measure(tasks=2000, rounds=3, url=MYSQL_URL):
    """{"<n> tenants": steps/s (median), ..., "ratio": many / few}, the counts interleaved."""
    ensure_mysql_database(url)
    asyncio.run(_schema(url))
    samples = {n: [] for n in TENANT_COUNTS}
    for _ in range(rounds):
        for n in TENANT_COUNTS:
            samples[n].append(asyncio.run(one_run(url, n, tasks)))
    results = {f"{n} tenants": median(samples[n]) for n in TENANT_COUNTS}
    few, many = TENANT_COUNTS
    results.update(ratio=results[f"{many} tenants"] / results[f"{few} tenants"], tasks=tasks)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    r = measure(args.tasks, args.rounds)
    print(f"{args.tasks} diamond tasks ({args.tasks * len(DIAMOND):,} no-op steps) submitted, then drained by one "
          f"process on MariaDB; medians of {args.rounds} interleaved rounds")
    for n in TENANT_COUNTS:
        print(f"  {n:5d} tenants: {r[f'{n} tenants']:7.0f} steps/s")
    few, many = TENANT_COUNTS
    print(f"  ratio {many:,} / {few} tenants: {r['ratio']:.2f}x   (1.0: tenants cost nothing)")
    return r


if __name__ == "__main__":
    main()
