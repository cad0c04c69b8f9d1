"""Scale-out and fairness on MariaDB (docs/OPERATIONS.md; goals in bench/README.md).

* throughput of the diamond DAG with 1, 2 and 3 host processes (tests/host_process.py),
  the tasks submitted all at once by a separate front-end process (hosts poll every 0.1 s);
* tenant B's first-step latency while tenant A has 10,000 steps queued (goal < 100 ms);
* queries per second of an idle host process, from MariaDB's `Questions` counter
  (goal: about one or less).
Run: python bench/scale_bench.py [--tasks 300]
"""
import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import diamond, ensure_mysql_database, median  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id  # noqa: E402

URL = "mysql://root@127.0.0.1:3306/pipeline_bench_mp"
HOST = ROOT / "tests" / "host_process.py"
DIAMOND = diamond("mp-noop")


def start_hosts(n, log, poll=1.0, concurrency=64):
    procs = []
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, str(HOST), "--db", URL, "--log", log, "--poll", str(poll),
                                 "--lease", "30", "--concurrency", str(concurrency)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert proc.stdout.readline().strip() == "ready"
        procs.append(proc)
    return procs


def stop_hosts(procs):
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


async def throughput(n_processes, tasks, poll=0.1):
    """Steps/s of ``n_processes`` hosts draining ``tasks`` diamond tasks that another process
    (a front end without handlers) submits all at once; the hosts find that work by
    polling every ``poll`` seconds, then run successors as they become ready."""
    ensure_mysql_database(URL)
    submitter = PipelineService(URL, autostart=False, require_handlers=False)
    await submitter.storage.create_missing_tables(include_reference=True)
    await submitter.define_pipeline("scale-diamond", DIAMOND)
    log = tempfile.mktemp()
    procs = start_hosts(n_processes, log, poll=poll)
    tenant = "scale-" + new_id()[:8]
    started = time.perf_counter()
    await asyncio.gather(*(submitter.submit(tenant, "scale-diamond", "bench", "t", {"i": i}) for i in range(tasks)))
    while (await submitter.list(tenant, status="succeeded", rows=1))["total"] < tasks:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop_hosts(procs)
    await submitter.storage.close()
    return tasks * len(DIAMOND) / elapsed


async def fairness(backlog_tasks=2000, probes=10):
    ensure_mysql_database(URL)
    first_start = {}

    async def work(tenant_id, task_id, step_name, input_data, config):
        first_start.setdefault(task_id, time.monotonic())
        await asyncio.sleep(0.05)
        return {}
    service = PipelineService(URL, concurrency=32, autostart=False)
    service.register_handler("fair-work", work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline("fair", diamond("fair-work"))
    for i in range(backlog_tasks):  # 10,000 steps queued by tenant A before anything runs
        await service.submit("tenant-A", "fair", "bench", "backlog", {"i": i})
    await service.start()
    await asyncio.sleep(1.0)
    latencies = []
    for _ in range(probes):
        submitted = time.monotonic()
        task = await service.submit("tenant-B", "fair", "bench", "probe", {})
        while task["id"] not in first_start:
            await asyncio.sleep(0.001)
        latencies.append((first_start[task["id"]] - submitted) * 1000)
        await asyncio.sleep(0.3)
    a_left = (await service.list("tenant-A", status="running", rows=1))["total"]
    await service.stop(timeout=1)
    return median(latencies), a_left


def questions():
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
        value = int(cur.fetchone()[1])
    conn.close()
    return value


def idle_queries(seconds=10.0):
    """Questions/s with one idle host process, minus the same interval measured without it
    (the measuring connection's own statements and anything else on the server)."""
    ensure_mysql_database(URL)
    asyncio.run(_create_schema())

    def rate():
        before = questions()
        time.sleep(seconds)
        return (questions() - before) / seconds
    baseline = rate()
    procs = start_hosts(1, tempfile.mktemp(), poll=1.0)
    time.sleep(2)  # past start-up
    with_host = rate()
    stop_hosts(procs)
    return with_host - baseline


async def _create_schema():
    svc = PipelineService(URL, autostart=False)
    await svc.storage.create_missing_tables(include_reference=True)
    await svc.storage.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args(argv)
    results = {"throughput": {n: asyncio.run(throughput(n, args.tasks)) for n in (1, 2, 3)}}
    results["fairness_ms"], a_running = asyncio.run(fairness())
    results["idle_qps"] = idle_queries()
    print(f"diamond DAG, {args.tasks} tasks, no-op handlers, separate host processes on one MariaDB:")
    for n, sps in results["throughput"].items():
        print(f"  {n} process(es): {sps:7.0f} steps/s   ({sps / results['throughput'][1]:.2f}x of 1 process)")
    print(f"tenant B first-step latency with tenant A's 10,000 steps queued (median): "
          f"{results['fairness_ms']:.1f} ms   (goal < 100 ms; A still had {a_running} tasks running)")
    print(f"idle host process: {results['idle_qps']:.2f} queries/s   (goal: about 1 or less)")
    return results


if __name__ == "__main__":
    main()
