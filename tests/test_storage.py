"""The storage layer on a real MariaDB and on SQLite."""
import asyncio
import json
import socket
import time

import pymysql
import pytest

from pipeline_service import DatabaseUnavailableError, SchemaMissingError, StorageError
from pipeline_service.exceptions import DuplicateKeyError
from pipeline_service.ids import new_id, now_ms
from pipeline_service.store.storage import Storage
from conftest import scratch_mysql_database, scratch_name


def task_row(tenant, **over):
    row = dict(id=new_id(), tenant_id=tenant, pipeline_id="p1", owner_id="u1", title="a title",
               params=json.dumps({"k": "v"}), status="pending", now=now_ms(),
               priority=5, idempotency_key=None, schedule_id=None, scheduled_for=None)
    row.update(over)
    return row


async def test_round_trip_of_every_table(storage, tenant):
    now = now_ms()
    task = task_row(tenant)
    async with storage.transaction() as tx:
        await tx.execute("insert_pipeline", id="pl-" + tenant, name="demo", description="a pipeline")
        await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id="pl-" + tenant, step_name="a",
                         step_type="noop", depends_on="[]", config='{"timeout": 3}', seq=1)
        await tx.execute("insert_task", **task)
        await tx.execute("insert_step", id=new_id(), tenant_id=tenant, task_id=task["id"], step_name="a",
                         step_type="noop", depends_on="[]", config="{}", seq=1, input_version=None,
                         ready_at=now, now=now, priority=5)
        await tx.execute("insert_artifact", id=new_id(), tenant_id=tenant, task_id=task["id"], step_name="a",
                         kind="output", version=1, content='{"x": "\u00e9\u4e2d\U0001F600"}', packed=None,
                         source="engine",
                         lineage=None, now=now)
    async with storage.transaction() as tx:
        definition = await tx.fetch_all("get_pipeline_definition", pipeline_id="pl-" + tenant)
        got_task = await tx.fetch_one("get_task", tenant_id=tenant, task_id=task["id"])
        steps = await tx.fetch_all("get_steps", tenant_id=tenant, task_id=task["id"])
        artifact = await tx.fetch_one("get_artifact", tenant_id=tenant, task_id=task["id"], step_name="a",
                                      kind="output", version=1)
    assert [(d["pipeline"], d["name"], d["description"], d["step_name"], d["config"]) for d in definition] == [
        ("pl-" + tenant, "demo", "a pipeline", "a", '{"timeout": 3}')]
    assert got_task["params"] == task["params"] and got_task["created_at"] == task["now"]
    assert got_task["n_total"] == 1 and got_task["n_succeeded"] == 0
    assert steps[0]["status"] == "pending" and steps[0]["ready_at"] == now and steps[0]["attempt"] == 0
    assert json.loads(artifact["content"]) == {"x": "\u00e9\u4e2d\U0001F600"}
    assert now > 2**31  # epoch milliseconds need the BIGINT columns


async def test_failing_second_statement_rolls_back_the_first(storage, tenant):
    first = task_row(tenant)
    with pytest.raises(Exception) as caught:
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **first)
            await tx.execute("insert_task", **dict(first, title="duplicate primary key"))
    assert not isinstance(caught.value, AssertionError)
    async with storage.transaction() as tx:
        assert await tx.fetch_one("get_task", tenant_id=tenant, task_id=first["id"]) is None


async def test_deferred_writes_are_seen_by_the_next_read_and_committed_in_order(storage, tenant):
    rows = [task_row(tenant, title=f"t{i}") for i in range(3)]
    async with storage.transaction() as tx:
        tx.defer_many("insert_task", rows[:2])
        tx.defer("insert_task", **rows[2])
        tx.defer("set_task_status", tenant_id=tenant, task_id=rows[0]["id"], status="running", error=None,
                 finished_at=None, now=now_ms(), from_status="pending")
        seen = await tx.fetch_all("list_tasks", tenant_id=tenant, pipeline_id=None, status=None, limit=10, offset=0)
        assert sorted((r["title"], r["status"]) for r in seen) == [("t0", "running"), ("t1", "pending"),
                                                                   ("t2", "pending")]
        tx.defer("set_task_status", tenant_id=tenant, task_id=rows[1]["id"], status="paused", error=None,
                 finished_at=None, now=now_ms(), from_status="pending")
    async with storage.transaction() as tx:
        assert (await tx.fetch_one("get_task", tenant_id=tenant, task_id=rows[1]["id"]))["status"] == "paused"


@pytest.mark.parametrize("fails_at", ["next statement", "commit"])
async def test_a_failing_deferred_write_rolls_back_the_whole_transaction(storage, tenant, fails_at):
    first, second = task_row(tenant), task_row(tenant)
    with pytest.raises(Exception) as caught:
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **first)
            tx.defer("insert_task", **second)
            tx.defer("insert_task", **dict(first, title="duplicate primary key"))
            if fails_at == "next statement":
                await tx.fetch_one("get_task", tenant_id=tenant, task_id=first["id"])
                pytest.fail("the duplicate key was not reported by the statement that sent it")
    assert "uplicate" in str(caught.value) or "UNIQUE" in str(caught.value)
    async with storage.transaction() as tx:
        for row in (first, second):
            assert await tx.fetch_one("get_task", tenant_id=tenant, task_id=row["id"]) is None


async def test_deferred_writes_of_a_block_that_raises_are_never_sent(storage, tenant):
    row = task_row(tenant)
    with pytest.raises(ZeroDivisionError):
        async with storage.transaction() as tx:
            tx.defer("insert_task", **row)
            1 / 0
    async with storage.transaction() as tx:
        assert await tx.fetch_one("get_task", tenant_id=tenant, task_id=row["id"]) is None


async def test_error_raised_in_the_block_rolls_back_and_propagates(storage, tenant):
    row = task_row(tenant)
    with pytest.raises(ZeroDivisionError):
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **row)
            1 / 0
    async with storage.transaction() as tx:
        assert await tx.fetch_one("get_task", tenant_id=tenant, task_id=row["id"]) is None


async def test_missing_parameter_is_refused_before_anything_runs(storage, tenant):
    with pytest.raises(StorageError, match="needs parameters.*owner_id"):
        async with storage.transaction() as tx:
            row = task_row(tenant)
            del row["owner_id"]
            await tx.execute("insert_task", **row)


async def test_create_missing_tables_is_non_destructive(storage, tenant):
    row = task_row(tenant)
    async with storage.transaction() as tx:
        await tx.execute("insert_task", **row)
    await storage.create_missing_tables(include_reference=True)
    async with storage.transaction() as tx:
        assert (await tx.fetch_one("get_task", tenant_id=tenant, task_id=row["id"]))["id"] == row["id"]


async def test_mysql_pool_reuses_connections(mysql_schema, tenant, monkeypatch):
    import aiomysql.connection
    storage = Storage.from_description(mysql_schema)
    async with storage.transaction() as tx:  # warm the pool
        await tx.fetch_one("get_task", tenant_id=tenant, task_id="none")
    opened, connect = [], aiomysql.connection.Connection._connect

    async def counted(self, *args, **kwargs):  # every new connection to the server, of this process only
        opened.append(self)
        return await connect(self, *args, **kwargs)
    monkeypatch.setattr(aiomysql.connection.Connection, "_connect", counted)
    for _ in range(100):
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **task_row(tenant))
    await storage.close()
    assert opened == [], f"100 transactions opened {len(opened)} connections"
    fresh = Storage.from_description(mysql_schema)  # the spy sees a connection being made
    async with fresh.transaction() as tx:
        await tx.fetch_one("get_task", tenant_id=tenant, task_id="none")
    await fresh.close()
    assert len(opened) >= 1


async def test_mysql_concurrent_transactions_isolate_errors(mysql_schema, tenant):
    storage = Storage.from_description(mysql_schema)
    duplicate = task_row(tenant)
    async with storage.transaction() as tx:
        await tx.execute("insert_task", **duplicate)

    async def one(i):
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **task_row(tenant, title=f"t{i}"))
            await asyncio.sleep(0.01)
            if i == 17:
                await tx.execute("insert_task", **duplicate)

    results = await asyncio.gather(*(one(i) for i in range(50)), return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [17]
    # the driver's error is translated (no raw driver error leaves the package), its cause kept
    assert isinstance(results[17], DuplicateKeyError)
    assert isinstance(results[17].__cause__, pymysql.err.IntegrityError)
    async with storage.transaction() as tx:
        titles = {r["title"] for r in await tx.fetch_all(
            "list_tasks", tenant_id=tenant, pipeline_id=None, status=None, limit=100, offset=0)}
    await storage.close()
    assert titles == {f"t{i}" for i in range(50) if i != 17} | {"a title"}


async def test_unreachable_database_names_host_port_and_database():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = Storage.from_description(
        {"driver": "mysql", "kwargs": {"host": "127.0.0.1", "port": port, "db": "nowhere", "connect_timeout": 1}})
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=rf"'nowhere' at 127\.0\.0\.1:{port}"):
        async with storage.transaction():
            pass
    assert time.monotonic() - started < 5


async def test_silent_server_times_out_with_a_clear_error():
    """A server that accepts but never answers the handshake must not hang the caller."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    storage = Storage.from_description(
        {"driver": "mysql", "kwargs": {"host": "127.0.0.1", "port": port, "db": "silent", "connect_timeout": 1}})
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailableError, match=rf"'silent' at 127\.0\.0\.1:{port}"):
            async with storage.transaction():
                pass
    finally:
        server.close()
    assert time.monotonic() - started < 5


async def test_unopenable_sqlite_file_is_reported(tmp_path):
    storage = Storage.from_description(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(DatabaseUnavailableError, match="no/such/dir/x.db"):
        async with storage.transaction():
            pass


@pytest.fixture
def empty_database(backend, tmp_path):
    if backend == "mysql":
        return scratch_mysql_database(scratch_name("empty"))
    return f"sqlite:///{tmp_path / 'empty.db'}"


async def test_missing_schema_says_how_to_create_it(empty_database, tenant):
    storage = Storage.from_description(empty_database)
    with pytest.raises(SchemaMissingError, match="create-schema"):
        async with storage.transaction() as tx:
            await tx.fetch_one("get_task", tenant_id=tenant, task_id="x")
    await storage.create_missing_tables()
    async with storage.transaction() as tx:
        assert await tx.fetch_one("get_task", tenant_id=tenant, task_id="x") is None
    await storage.close()


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listing(url, first):
    """``url`` with ``first`` (host:port) listed before its own server."""
    scheme, rest = url.split("://", 1)
    credentials, at, servers = rest.rpartition("@")
    return f"{scheme}://{credentials}{at}{first},{servers}"


async def test_a_server_that_does_not_answer_is_passed_over_for_the_next(mysql_schema, tenant):
    storage = Storage.from_description(listing(mysql_schema, f"127.0.0.1:{unused_port()}"))
    try:
        found = await storage.atomic(lambda tx: tx.fetch_all("get_task", tenant_id=tenant, task_id="none"))
        assert found == [] and "server 2 of 2" in storage.describe()
        assert storage.connector.galera is False and storage.connector.statements == "mysql"
    finally:
        await storage.close()


async def test_no_server_answering_names_them_all(mysql_schema):
    first, second = unused_port(), unused_port()
    storage = Storage.from_description(f"mysql://root@127.0.0.1:{first},127.0.0.1:{second}/x")
    with pytest.raises(DatabaseUnavailableError, match=f"any server.*:{first}.*:{second}"):
        await storage.open()
    await storage.close()


def test_conflict_pauses_grow_and_stay_bounded():
    from pipeline_service.store.storage import ATTEMPTS, FIRST_PAUSE, LONGEST_PAUSE, retry_pause
    pauses = [[retry_pause(a) for a in range(1, ATTEMPTS + 1)] for _ in range(50)]
    assert all(FIRST_PAUSE / 2 <= p <= LONGEST_PAUSE for run in pauses for p in run)
    assert max(run[0] for run in pauses) < min(run[-1] for run in pauses)  # later runs wait longer
    assert len({run[2] for run in pauses}) > 1  # jittered: two colliding transactions drift apart


async def test_a_union_of_more_branches_than_sqlite_allows_in_one_statement_reads_them_all(storage, tenant):
    """A join step reading the outputs of 600 upstream steps (a wide DAG, none of them cached):
    SQLite takes at most 500 terms in one compound SELECT, so fetch_union sends it in parts."""
    task_id, now = new_id(), now_ms()
    names = [f"s{i:04d}" for i in range(600)]
    async with storage.transaction() as tx:
        for name in names:
            tx.defer("insert_artifact", id=new_id(), tenant_id=tenant, task_id=task_id, step_name=name,
                     kind="output", version=1, content=json.dumps({"n": name}), packed=None, source="engine",
                     lineage=None, now=now)
    async with storage.transaction() as tx:
        rows = await tx.fetch_union("get_artifact", [dict(tenant_id=tenant, task_id=task_id, step_name=name,
                                                          kind="output", version=1) for name in names])
    assert sorted(json.loads(r["content"])["n"] for r in rows) == names
