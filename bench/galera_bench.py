"""One MariaDB server against a 3-node Galera cluster on loopback (single writer).

For each database, --rounds interleaved rounds: --tasks diamond tasks (no-op handlers)
submitted at once to one service, run to the end. Figures per round: steps/s; step
latency from ready to its outcome committed (finished_at - ready_at; p50, p99); the
database servers' CPU per step (the writer's, and the whole cluster's). Then the writer
is killed (-9) once mid-run: the pause is the time from the kill to the first outcome
committed on the next node. Medians over rounds; ratios Galera / one server, measured in
the same run. The one server is the machine's MariaDB (127.0.0.1:3306); the cluster is
started here (tests/galera_cluster.py) and stopped at the end.

    python bench/galera_bench.py [--tasks 300] [--rounds 3]
"""
import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from bench.common import MYSQL_URL, diamond, ensure_mysql_database, median  # noqa: E402
from galera_cluster import PASSWORD, USER, Cluster  # noqa: E402
from pipeline_service import PipelineService  # noqa: E402
from pipeline_service.ids import new_id  # noqa: E402

DIAMOND = diamond("ha-noop")


async def noop(tenant_id, task_id, step_name, input_data, config):
    return {}


def cpu_seconds(pids):
    """CPU seconds used so far by the processes ``pids`` (utime + stime)."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def query(reader, sql, *args):
    """Rows of ``sql`` read on ``reader`` ((host, port, user, password, database)), seeing every
    write the cluster has committed."""
    import pymysql
    host, port, user, password, database = reader
    conn = pymysql.connect(host=host, port=port, user=user, password=password, database=database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW VARIABLES LIKE 'wsrep_on'")
            if (cur.fetchone() or ("", "OFF"))[1] == "ON":
                cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


async def wait_done(service, tenant, n, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await service.list(tenant, status="succeeded", rows=1))["total"] >= n:
                return
        except Exception:  # the writer may be gone: the next call goes to the next node
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} tasks did not finish in {timeout}s")
        await asyncio.sleep(0.02)


async def one_round(url, reader, tasks, server_pids, writer_pids, kill=None):
    service = PipelineService(url, concurrency=64)
    service.register_handler("ha-noop", noop)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline("ha-diamond", DIAMOND)
    await service.start()
    tenant = "bench-" + new_id()[:8]
    cpu, writer_cpu, started = cpu_seconds(server_pids), cpu_seconds(writer_pids), time.perf_counter()
    await asyncio.gather(*(service.submit(tenant, "ha-diamond", "bench", "ha", {"i": i}) for i in range(tasks)))
    pause = None
    if kill is not None:
        pause = await kill(tenant)
    await wait_done(service, tenant, tasks)
    elapsed = time.perf_counter() - started
    steps = tasks * len(DIAMOND)
    alive = [p for p in server_pids if Path(f"/proc/{p}").exists()]
    cpu = cpu_seconds(alive) - cpu if kill is None else float("nan")
    writer_cpu = cpu_seconds(writer_pids) - writer_cpu if kill is None else float("nan")
    latency = [row[0] for row in query(reader, "SELECT finished_at - ready_at FROM pipeline_task_steps "
                                               "WHERE tenant_id = %s", tenant)]
    await service.stop()
    return {"steps_per_s": steps / elapsed, "p50": percentile(latency, 0.5), "p99": percentile(latency, 0.99),
            "cpu_ms": cpu * 1000 / steps, "writer_cpu_ms": writer_cpu * 1000 / steps, "pause": pause}


def galera_database(cluster):
    """A fresh database on the cluster: (its URL naming every node, a reader on node 1)."""
    import pymysql
    name = "bench_" + uuid.uuid4().hex[:8]
    conn = pymysql.connect(unix_socket=str(cluster.nodes[0].socket), user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn.close()
    return (f"mysql://{USER}:{PASSWORD}@{','.join(cluster.hosts())}/{name}",
            ("127.0.0.1", cluster.nodes[1].port, USER, PASSWORD, name))


def one_server_database():
    from urllib.parse import urlsplit
    url = ensure_mysql_database(MYSQL_URL)
    parts = urlsplit(url)
    return url, (parts.hostname, parts.port or 3306, parts.username or "root", parts.password or "",
                 parts.path.lstrip("/"))


async def measure(tasks, rounds):
    one_server = [int(Path("/run/mysqld/mysqld.pid").read_text())]
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="pipeline-galera-bench-")), 3)
    try:
        cluster.start()
        nodes = [n.pid() for n in cluster.nodes]
        results = {"one server": [], "galera": []}
        for _ in range(rounds):  # interleaved: the machine's noise falls on both alike
            results["one server"].append(await one_round(*one_server_database(), tasks, one_server, one_server))
            results["galera"].append(await one_round(*galera_database(cluster), tasks, nodes, nodes[:1]))
        url, reader = galera_database(cluster)

        async def kill_writer(tenant):
            done = "SELECT count(*), MIN(finished_at) FROM pipeline_task_steps WHERE tenant_id = %s AND finished_at > %s"
            while query(reader, done, tenant, 0)[0][0] < tasks:  # a fifth of the steps done
                await asyncio.sleep(0.02)
            cluster.kill(cluster.nodes[0])
            killed = int(time.time() * 1000)
            while True:
                count, first = query(reader, done, tenant, killed)[0]
                if count:
                    return (first - killed) / 1000
                await asyncio.sleep(0.01)
        failover = await one_round(url, reader, tasks, nodes[1:], nodes[1:2], kill=kill_writer)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
    return results, failover


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results, failover = asyncio.run(measure(args.tasks, args.rounds))
    med = {db: {k: median([r[k] for r in rs]) for k in ("steps_per_s", "p50", "p99", "cpu_ms", "writer_cpu_ms")}
           for db, rs in results.items()}
    one, ha = med["one server"], med["galera"]
    print(f"{args.tasks} diamond tasks at once, {args.rounds} interleaved rounds, medians")
    print(f"{'':12}{'steps/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'DB CPU/step':>13}{'writer CPU':>12}")
    for db, m in med.items():
        print(f"{db:12}{m['steps_per_s']:>10,.0f}{m['p50']:>9.0f}{m['p99']:>9.0f}{m['cpu_ms']:>10.2f} ms"
              f"{m['writer_cpu_ms']:>9.2f} ms")
    print(f"galera / one server: steps/s {ha['steps_per_s'] / one['steps_per_s']:.2f}x, "
          f"p99 {ha['p99'] / one['p99']:.2f}x, database CPU per step {ha['cpu_ms'] / one['cpu_ms']:.2f}x")
    print(f"steps/s per database core (one server): {1000 / one['cpu_ms']:,.0f}")
    print(f"writer killed mid-run: first outcome on the next node {failover['pause']:.2f}s after the kill; "
          f"that run {failover['steps_per_s']:,.0f} steps/s overall")


if __name__ == "__main__":
    main()
