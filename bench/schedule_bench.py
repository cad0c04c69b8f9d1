"""What schedules cost (issue #15, "Measure"), on MariaDB.

* burst: --schedules schedules (over 50 tenants) all due in the same second; the time until
  all their tasks exist (``schedules.fire_due()``, the call the executor's poll makes when its
  probe sees a due tick), against the baseline of creating as many tasks by submits (50 at
  once, the same pipeline) in the same run.  Rounds alternate; medians; ratio ticks / submits.
* idle: a process with --idle-schedules enabled schedules, none due, its executor running
  (poll_interval 1 s): the queries it sends per second and its probe's latency, against the
  same process on a database with no schedule, in the same run.  Rounds alternate; medians.

The machine is shared (other work runs on its 2 cores): figures vary from run to run; the
ratios, measured side by side, are what to read.
Run: python bench/schedule_bench.py [--schedules 1000] [--idle-schedules 10000] [--rounds 3]
"""
import argparse
import asyncio
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import MYSQL_URL, ensure_mysql_database, median  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id, now_ms  # noqa: E402
from pipeline_service.store import sqlor_adapter  # noqa: E402

TENANTS = 50
AT_ONCE = 50        # concurrent creates / submits
IDLE_SECONDS = 5.0  # one idle window
PIPELINE = "sched-bench"


async def noop(tenant_id, task_id, step_name, input_data, config):
    return {}


def sql(url, statement, *args):
    p = urlsplit(url)
    conn = pymysql.connect(host=p.hostname, port=p.port or 3306, user=p.username or "root",
                           password=p.password or "", database=p.path.lstrip("/"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall()
    finally:
        conn.close()


async def in_batches(calls):
    for i in range(0, len(calls), AT_ONCE):
        await asyncio.gather(*(call() for call in calls[i:i + AT_ONCE]))


async def front(url):
    """A service that creates and fires by hand (no executor loop): nothing else touches the rows."""
    service = PipelineService(url, autostart=False, require_handlers=False)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(PIPELINE, [{"step_name": "a", "step_type": "sched-bench-noop"},
                                             {"step_name": "b", "step_type": "sched-bench-noop",
                                              "depends_on": ["a"]}])
    return service


async def burst_ticks(service, url, n):
    run = new_id()[:8]
    await in_batches([lambda i=i: service.schedule_create(f"b{run}-{i % TENANTS}", PIPELINE, "o", every=3600)
                      for i in range(n)])
    due = now_ms()
    sql(url, "UPDATE pipeline_schedules SET next_fire_at = %s WHERE tenant_id LIKE %s", due, f"b{run}-%")
    started = time.perf_counter()
    fired = await service.schedules.fire_due()
    took = time.perf_counter() - started
    made = sql(url, "SELECT count(*) FROM pipeline_tasks WHERE tenant_id LIKE %s", f"b{run}-%")[0][0]
    assert fired.created == made == n, (fired.created, made, n)
    return took


async def burst_submits(service, url, n):
    run = new_id()[:8]
    started = time.perf_counter()
    await in_batches([lambda i=i: service.submit(f"s{run}-{i % TENANTS}", PIPELINE, "o", "t")
                      for i in range(n)])
    took = time.perf_counter() - started
    assert sql(url, "SELECT count(*) FROM pipeline_tasks WHERE tenant_id LIKE %s", f"s{run}-%")[0][0] == n
    return took


class Sent:
    """Round trips this process sends (every one goes through sqlor_adapter.execute/commit)."""

    def __init__(self):
        self.count, self.probes = 0, []
        execute, commit = sqlor_adapter.execute, sqlor_adapter.commit

        async def counted_execute(sor, statements):
            self.count += 1
            started = time.perf_counter()
            try:
                return await execute(sor, statements)
            finally:
                if len(statements) == 1 and "AS runnable" in statements[0][0]:
                    self.probes.append((time.perf_counter() - started) * 1000)

        async def counted_commit(sor, statements=()):
            self.count += 1
            return await commit(sor, statements)
        sqlor_adapter.execute, sqlor_adapter.commit = counted_execute, counted_commit


async def idle_window(url, sent):
    """Queries per second and the median probe latency (ms) of an idle running executor."""
    service = PipelineService(url, poll_interval=1.0)
    service.register_handler("sched-bench-noop", noop)
    await service.start()
    await asyncio.sleep(1.5)  # past its first polls
    count, probes = sent.count, len(sent.probes)
    await asyncio.sleep(IDLE_SECONDS)
    rate = (sent.count - count) / IDLE_SECONDS
    latency = median(sent.probes[probes:])
    await service.stop()
    return rate, latency


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--idle-schedules", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = MYSQL_URL.rsplit("/", 1)[0]
    burst_url = ensure_mysql_database(base + "/pipeline_bench_sched")
    empty_url = ensure_mysql_database(base + "/pipeline_bench_sched_empty")
    idle_url = ensure_mysql_database(base + "/pipeline_bench_sched_idle")

    service = await front(burst_url)
    ticks, submits = [], []
    for r in range(args.rounds):  # alternate which goes first
        order = (burst_ticks, burst_submits) if r % 2 == 0 else (burst_submits, burst_ticks)
        for fn in order:
            (ticks if fn is burst_ticks else submits).append(await fn(service, burst_url, args.schedules))
    await service.stop()
    t, s = median(ticks), median(submits)
    print(f"burst: {args.schedules} schedules due in the same second: all their tasks exist after {t:.2f}s "
          f"({args.schedules / t:.0f} tasks/s); {args.schedules} submits, {AT_ONCE} at once: {s:.2f}s "
          f"({args.schedules / s:.0f} tasks/s); ticks / submits = {t / s:.2f}x the time "
          f"(medians of {args.rounds} interleaved rounds)")

    await (await front(empty_url)).stop()  # the baseline: the same tables, no schedule
    service = await front(idle_url)
    await in_batches([lambda i=i: service.schedule_create(f"i-{i % TENANTS}", PIPELINE, "o", every=86_400)
                      for i in range(args.idle_schedules)])
    await service.stop()
    sent = Sent()
    rates: dict[str, list] = {"none": [], "many": []}
    latencies: dict[str, list] = {"none": [], "many": []}
    for r in range(args.rounds):
        for name, url in (("none", empty_url), ("many", idle_url))[::1 if r % 2 == 0 else -1]:
            rate, latency = await idle_window(url, sent)
            rates[name].append(rate)
            latencies[name].append(latency)
    print(f"idle: {args.idle_schedules} enabled schedules, none due: {median(rates['many']):.2f} queries/s, "
          f"probe {median(latencies['many']):.2f} ms; no schedule: {median(rates['none']):.2f} queries/s, "
          f"probe {median(latencies['none']):.2f} ms; ratio {median(rates['many']) / median(rates['none']):.2f}x "
          f"queries, {median(latencies['many']) / median(latencies['none']):.2f}x probe time "
          f"(medians of {args.rounds} interleaved rounds of {IDLE_SECONDS:.0f}s)")


if __name__ == "__main__":
    asyncio.run(main())
