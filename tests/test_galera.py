"""High availability on a MariaDB Galera cluster (docs/OPERATIONS.md, "Galera").

One 3-node cluster on loopback (tests/galera_cluster.py) for the module. Host processes
(tests/host_process.py) run the steps; the test's own service submits and reads. Every
test has its own database on the cluster.
"""
import asyncio
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pymysql
import pytest

from pipeline_service import PipelineService
from pipeline_service.ids import new_id
from pipeline_service.store import sqlor_adapter
from pipeline_service.store.storage import Storage
from conftest import IN_CI, until
from galera_cluster import PASSWORD, PROVIDER, USER, Cluster
from engine_hosts import DIAMOND, Hosts, front_service, wait_succeeded

pytestmark = [pytest.mark.slow, pytest.mark.galera]
TASKS = 200


@pytest.fixture(scope="module")
def cluster():
    missing = [what for what, there in (("galera-4", Path(PROVIDER).exists()), ("rsync", shutil.which("rsync")),
                                         ("mariadbd", Path("/usr/sbin/mariadbd").exists())) if not there]
    if missing:
        message = f"a Galera cluster needs {', '.join(missing)} (apt-get install galera-4 rsync)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # under /tmp itself: the servers run as mysql, which cannot enter pytest's (root's) folders
    galera = Cluster(Path(tempfile.mkdtemp(prefix="pipeline-galera-")), 3)
    try:
        galera.start()
        yield galera
    finally:
        galera.stop()
        shutil.rmtree(galera.root, ignore_errors=True)


def database_on(galera, name, nodes=None):
    """A fresh database ``name`` on the cluster; its URL naming ``nodes`` (indexes; all by default)."""
    conn = pymysql.connect(unix_socket=str(galera.nodes[0].socket), user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn.close()
    servers = ",".join(f"127.0.0.1:{galera.nodes[i].port}" for i in (nodes or range(len(galera.nodes))))
    return f"mysql://{USER}:{PASSWORD}@{servers}/{name}"


def node_query(galera, index, db, sql, *args):
    conn = pymysql.connect(host="127.0.0.1", port=galera.nodes[index].port, user=USER, password=PASSWORD,
                           database=db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")  # see every write the cluster has committed
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
async def setup(cluster, tmp_path):
    """(database name, the submitter service on every node, the host processes)"""
    name = "ha_" + uuid.uuid4().hex[:8]
    url = database_on(cluster, name)
    async with front_service(url, {"ha-diamond": DIAMOND}) as submitter:
        with Hosts(url, tmp_path) as hosts:
            yield name, url, submitter, hosts


def each_output_once(galera, db, tenant, node=0):
    rows = node_query(galera, node, db, "SELECT count(*), max(version) FROM pipeline_artifacts "
                      "WHERE tenant_id = %s AND kind = 'output' GROUP BY task_id, step_name", tenant)
    return len(rows) == TASKS * len(DIAMOND) and all(count == 1 and version == 1 for count, version in rows)


def calls_and_attempts(galera, db, tenant, hosts, node=0):
    """Handler calls (from the hosts' log), claims made (each step's attempt) and the re-runs
    lease recoveries made (each step's crash count), per step."""
    calls = Counter((e[2], e[3]) for e in hosts.events() if e[0] == "start")
    rows = node_query(galera, node, db, "SELECT task_id, step_name, attempt, crash_count FROM pipeline_task_steps "
                      "WHERE tenant_id = %s", tenant)
    return calls, Counter({(t, s): a for t, s, a, _ in rows}), Counter({(t, s): c for t, s, _, c in rows})


async def submit_all(submitter, tenant):
    return [(await submitter.submit(tenant, "ha-diamond", "o", f"t{i}", {"i": i}))["id"] for i in range(TASKS)]


async def test_two_processes_writing_to_two_nodes_run_each_claim_once(cluster, setup):
    """Multi-writer: row locks are per node, so both nodes' SKIP LOCKED claims can pick the same
    steps; certification lets one COMMIT through and the other is run again (atomic)."""
    name, _, submitter, hosts = setup
    for node in cluster.nodes[1:]:  # one process on each of two nodes, each naming only its own
        hosts.db = f"mysql://{USER}:{PASSWORD}@127.0.0.1:{node.port}/{name}"
        hosts.start(1, lease=15.0, poll=0.05)
    try:
        tenant = "ha-" + new_id()[:8]
        await submit_all(submitter, tenant)
        try:
            await wait_succeeded(submitter, tenant, TASKS, timeout=240)
        except TimeoutError as exc:
            errors = node_query(cluster, 0, name, "SELECT DISTINCT error FROM pipeline_task_steps WHERE tenant_id = %s "
                                "AND status = 'failed'", tenant)
            raise AssertionError(f"{exc}; the failed steps' errors: {errors}; the hosts' trouble: "
                                 f"{troubles(hosts)}") from None
        pids = {e[1] for e in hosts.events() if e[0] == "end"}
        assert len(pids) == 2, "both nodes' processes ran steps"
        # every claim committed ran its handler once, a claim that lost certification ran none, and
        # a step ran again only after a lease ran out (a loaded machine) and recovery took it back
        calls, attempts, recovered = calls_and_attempts(cluster, name, tenant, hosts)
        odd = {step: (calls[step], attempts[step], recovered[step]) for step in attempts if calls[step] != attempts[step]}
        assert not odd, (f"{calls.total()} calls for {attempts.total()} claims; (calls, claims, recoveries) of "
                         f"the steps that differ: {odd}; the hosts' trouble: {troubles(hosts)}")
        assert all(attempts[step] == 1 + recovered[step] for step in attempts), "a re-run no lease explains"
        assert each_output_once(cluster, name, tenant)
    finally:
        hosts.stop()


async def test_a_node_that_rejoins_mid_run_catches_up(cluster, setup):
    name, _, submitter, hosts = setup
    hosts.start(2, lease=15.0, poll=0.05)
    tenant = "ha-" + new_id()[:8]
    await submit_all(submitter, tenant)
    await hosts.wait_for(lambda e: e[0] == "end", 60, "no step ran")
    leaving = cluster.nodes[2]
    cluster.kill(leaving)
    cluster.launch(leaving)  # it rejoins by state transfer while the run goes on
    await asyncio.get_running_loop().run_in_executor(None, cluster.wait_synced, leaving)
    await wait_succeeded(submitter, tenant, TASKS, timeout=240)
    assert each_output_once(cluster, name, tenant, node=0) and each_output_once(cluster, name, tenant, node=2)


def troubles(hosts):
    """The warnings and errors the host processes logged (with their tracebacks)."""
    lines = []
    for i in range(len(hosts.procs)):
        keep = False
        for line in hosts.stderr(i).splitlines():
            keep = " WARNING " in line or " ERROR " in line or (keep and not line[:4].isdigit())
            if keep:
                lines.append(f"host{i}: {line}")
    return "\n".join(lines[-200:])


def report(request, line):
    """A line in pytest's own output (CI's log shows it; a print would be captured)."""
    request.config.pluginmanager.get_plugin("terminalreporter").write_line(line)


async def test_the_writer_killed_mid_run_loses_no_task_and_stores_each_output_once(cluster, setup, request):
    name, _, submitter, hosts = setup
    hosts.start(2, lease=15.0, poll=0.05)
    tenant = "ha-" + new_id()[:8]
    await submit_all(submitter, tenant)
    await until_ended(hosts, TASKS)  # a fifth of the steps done: the rest runs across the failover
    writer = cluster.nodes[0]
    cluster.kill(writer)
    killed_at = time.time()
    try:
        await wait_succeeded(submitter, tenant, TASKS, timeout=240)
        # the pause: from the kill to the first outcome recorded after it (on the new writer)
        (resumed,), = node_query(cluster, 1, name, "SELECT MIN(finished_at) FROM pipeline_task_steps "
                                 "WHERE tenant_id = %s AND finished_at > %s", tenant, int(killed_at * 1000))
        report(request, f"\nwriter killed: the first outcome was recorded on the next node "
                        f"{resumed / 1000 - killed_at:.2f}s later")
        assert all("moving to" in hosts.stderr(i) for i in range(2)), "a host process did not move to the next server"
        assert each_output_once(cluster, name, tenant, node=1)
        # a claim whose COMMIT the dying writer took but never confirmed ran no handler: its
        # lease ran out and another claim re-ran the step; no claim ran a handler twice
        calls, attempts, _ = calls_and_attempts(cluster, name, tenant, hosts, node=1)
        assert all(calls[step] <= attempts[step] for step in attempts) and len(calls) == TASKS * len(DIAMOND)
    finally:
        cluster.launch(writer)  # back, for whatever runs next
        await asyncio.get_running_loop().run_in_executor(None, cluster.wait_synced, writer)


async def until_ended(hosts, count, timeout=60):
    deadline = time.monotonic() + timeout
    while sum(1 for e in hosts.events() if e[0] == "end") < count:
        assert time.monotonic() < deadline, f"fewer than {count} steps ran in {timeout}s"
        await asyncio.sleep(0.02)


def isolate(galera, node, cut):
    """Cut ``node`` off the cluster (it leaves the primary component and refuses work: error 1047),
    or let it back (it rejoins by incremental state transfer)."""
    conn = pymysql.connect(unix_socket=str(node.socket), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET GLOBAL wsrep_provider_options = 'gmcast.isolate={1 if cut else 0}'")
    finally:
        conn.close()


async def test_a_node_cut_off_from_the_cluster_is_left_for_the_next(cluster, setup):
    """A node outside the primary component answers but refuses work ("WSREP has not yet
    prepared node for application use", 1047): the engine moves to the next node."""
    name, _, submitter, _ = setup
    cut = cluster.nodes[2]
    url = f"mysql://{USER}:{PASSWORD}@127.0.0.1:{cut.port},127.0.0.1:{cluster.nodes[1].port}/{name}"
    service = PipelineService(url, poll_interval=0.05)

    async def noop(tenant_id, task_id, step_name, input_data, config):
        return {}
    service.register_handler("mp-noop", noop)
    tenant = "ha-" + new_id()[:8]
    try:
        first = await service.submit(tenant, "ha-diamond", "o", "before", {})
        assert "server 1 of 2" in service.storage.describe()
        isolate(cluster, cut, True)
        await until(lambda: not cluster.synced(cut), what="the node to leave the primary component")
        later = await service.submit(tenant, "ha-diamond", "o", "after", {})
        for task in (first, later):
            assert (await service.wait(tenant, task["id"], timeout=60))["status"] == "succeeded"
        assert "server 2 of 2" in service.storage.describe()
    finally:
        await service.stop()
        isolate(cluster, cut, False)
        await asyncio.get_running_loop().run_in_executor(None, cluster.wait_synced, cut)


async def test_a_transaction_aborted_by_another_nodes_write_mid_batch_commits_nothing(cluster):
    """MariaDB Galera runs the statements after the one a brute-force abort (another node's
    conflicting write) interrupted, in a new transaction: a COMMIT in the same multi-statement
    query would commit them although the client gets error 1213.  Found as steps made ready
    without their input artifact (the multi-writer test); on a Galera node the COMMIT goes alone."""
    name = "ha_" + uuid.uuid4().hex[:8]
    url = database_on(cluster, name, nodes=[0])
    node_query(cluster, 0, name, "CREATE TABLE r (id INT PRIMARY KEY, v INT)")
    node_query(cluster, 0, name, "CREATE TABLE t (id INT PRIMARY KEY)")
    node_query(cluster, 0, name, "INSERT INTO r VALUES (1, 0)")
    storage = Storage.from_description(url)
    try:
        async with storage.transaction():  # opens the pool: the node says it is a Galera node
            pass
        assert storage.connector.galera
        with pytest.raises(pymysql.err.OperationalError, match="1213"):  # atomic runs such a one again
            async with storage.connector.session() as sor:
                await sqlor_adapter.execute(sor, [("UPDATE r SET v = v + 1 WHERE id = 1", ())])
                writer = asyncio.get_running_loop().run_in_executor(None, write_when_sleeping, cluster, name)
                try:
                    await sqlor_adapter.commit(sor, [("DO SLEEP(3)", ()), ("INSERT INTO t VALUES (1)", ()),
                                                     ("INSERT INTO t VALUES (2)", ())], alone=storage.connector.galera)
                finally:
                    await writer
        assert node_query(cluster, 0, name, "SELECT id FROM t") == ()
        assert node_query(cluster, 0, name, "SELECT v FROM r") == ((100,),), "the other node's write won"
    finally:
        await storage.close()


def write_when_sleeping(galera, db):
    """Once the batch above is in its DO SLEEP on node 0, write the same row on node 1."""
    deadline = time.monotonic() + 30
    while not node_query(galera, 0, db, "SELECT id FROM information_schema.processlist WHERE info LIKE 'DO SLEEP%%'"):
        assert time.monotonic() < deadline, "the batch never reached its DO SLEEP"
        time.sleep(0.01)
    node_query(galera, 1, db, "UPDATE r SET v = v + 100 WHERE id = 1")
