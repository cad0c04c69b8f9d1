"""The workarounds for sqlor 2.1.2's defects (docs/ARCHITECTURE.md), pinned by tests of their own."""
import base64

import pytest
from sqlor.dbpools import sqlorFactory
from appPublic.dictObject import DictObject

from pipeline_service.store import sqlor_adapter
from pipeline_service.store.connectors import connector_for, MySQLConnector, SQLiteConnector
from pipeline_service.exceptions import StorageError
from pipeline_service.ids import new_id, now_ms
from pipeline_service.json_objects import to_json


async def rows(sor, sql, params):
    """One query through the adapter, its rows as dicts (what Transaction.fetch_all does)."""
    await sqlor_adapter.execute(sor, [sqlor_adapter.bound(sor, sql, params)])
    return await sqlor_adapter.fetch_rows(sor)


@pytest.fixture
async def sqlite_t(tmp_path):
    """Our SQLite driver, connected and bound, with an empty table t (a TEXT, b INTEGER)."""
    sor = sqlor_adapter.new_sqlor(sqlor_adapter.SQLITE_DRIVER, {"path": str(tmp_path / "x.db")})
    await sor.connect()
    await sqlor_adapter.bind(sor, sor.conn)
    await sqlor_adapter.run(sor, "CREATE TABLE t (a TEXT, b INTEGER)", {})
    yield sor
    await sqlor_adapter.unbind(sor)
    await sor.close()


async def insert_t(sor, *pairs):
    for a, b in pairs:
        await sqlor_adapter.run(sor, "INSERT INTO t VALUES (${a}$, ${b}$)", {"a": a, "b": b})


def test_our_sqlite_driver_is_a_plugin_found_by_sqlors_factory(tmp_path):
    sor = sqlorFactory(DictObject(driver="pipeline_sqlite", kwargs=DictObject(path=str(tmp_path / "x.db"))))
    assert isinstance(sor, sqlor_adapter.AiosqliteSqlor)


async def test_sqlite_driver_connects_and_binds_parameters(sqlite_t):
    assert await sqlor_adapter.run(sqlite_t, "INSERT INTO t VALUES (${a}$, ${b}$)", {"a": "x'); --", "b": 2}) == 1
    assert await rows(sqlite_t, "SELECT a, b FROM t WHERE b = ${b}$", {"b": 2}) == [
        {"a": "x'); --", "b": 2}]


def test_the_aiomysql_driver_name_is_refused_not_silently_broken():
    # sqlor resolves 'aiomysql' to a class whose connect() is "Not Implemented"
    with pytest.raises(RuntimeError, match="aiomysql"):
        sqlor_adapter.new_sqlor("aiomysql", {"host": "h", "db": "d"})
    assert isinstance(connector_for({"driver": "aiomysql", "kwargs": {"db": "d"}}), MySQLConnector)


def test_sqlor_is_never_given_a_password():
    # SQLor.__init__ would decrypt it with the host's password_key: a plaintext one
    # fails, and a standalone process has no config.json at all
    sor = sqlor_adapter.new_sqlor(sqlor_adapter.MYSQL_DRIVER, {"host": "h", "db": "d", "password": "plain pw"})
    assert "password" not in sor.dbdesc and sor.dbdesc["db"] == "d"


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///rel/x.db", "rel/x.db"),
    ("sqlite:////abs/x.db", "/abs/x.db"),
])
def test_sqlite_urls(url, expected):
    connector = connector_for(url)
    assert isinstance(connector, SQLiteConnector) and connector.path == expected


def test_mysql_url():
    connector = connector_for("mysql://bob:p%40ss@db.example:3307/prod")
    assert connector.addresses == [("db.example", 3307)]
    assert connector.kwargs == {"user": "bob", "password": "p@ss", "db": "prod"}


def test_a_cluster_is_several_addresses_in_a_url_or_a_list():
    url = connector_for("mysql://bob:pw@n1:4400,n2,[::1]:4402/prod")
    assert url.addresses == [("n1", 4400), ("n2", 3306), ("::1", 4402)] and url.several
    listed = connector_for({"driver": "mysql", "kwargs": {"host": ["n1:4400", "n2"], "port": 3307, "db": "prod"}})
    assert listed.addresses == [("n1", 4400), ("n2", 3307)]
    assert "server 1 of 2" in listed.describe()


@pytest.mark.parametrize("host, said", [(["n1", "n1"], "twice"), ("n1,", "empty"), (["n1", 7], "name or a list"),
                                        ("n1:99999", "port"), ([], "empty")])
def test_bad_cluster_addresses_are_refused(host, said):
    with pytest.raises(StorageError, match=said):
        connector_for({"driver": "mysql", "kwargs": {"host": host, "db": "prod"}})


@pytest.mark.parametrize("bad", ["postgres://x/y", "sqlite://", 42, {"driver": "oracle"},
                                 {"driver": "mysql", "kwargs": {"host": "h"}}])
def test_bad_database_descriptions_are_refused(bad):
    with pytest.raises(StorageError):
        connector_for(bad)


async def test_optional_blocks_are_kept_or_dropped_by_value(sqlite_t):
    await insert_t(sqlite_t, ("x", 1), ("x", 2), ("y", 2))
    sql = "SELECT count(*) AS n FROM t WHERE 1 = 1 $<a>$ AND a = ${a}$ $</a>$ $<b>$ AND b = ${b}$ $</b>$"
    counts = [(await rows(sqlite_t, sql, ns))[0]["n"] for ns in (
        {"a": None, "b": None}, {"a": "x", "b": None}, {"a": None, "b": 2}, {"a": "x", "b": 2})]
    assert counts == [3, 2, 2, 1]


async def test_list_values_become_one_placeholder_per_item_and_empty_lists_match_nothing(sqlite_t):
    await insert_t(sqlite_t, ("x", 1), ("y", 2), ("z'; --", 3))
    sql = "SELECT a FROM t WHERE b >= ${low}$ AND a IN (${names}$) ORDER BY a"
    found = [[r["a"] for r in await rows(sqlite_t, sql, {"low": low, "names": names})]
             for low, names in ((1, ["x", "z'; --"]), (2, ("x", "y", "z'; --")), (1, []), (1, ["y"]))]
    assert found == [["x", "z'; --"], ["y", "z'; --"], [], ["y"]]


def test_list_expansion_on_mysql_binds_every_item():
    sor = sqlor_adapter.new_sqlor(sqlor_adapter.MYSQL_DRIVER, {"host": "h", "db": "d"})
    sql = "UPDATE t SET s = ${s}$ WHERE id IN (${ids}$) AND k = ${k}$"
    assert sqlor_adapter.bound(sor, sql, {"s": 1, "ids": ["a", "b", "c"], "k": 2}) == (
        "UPDATE t SET s = %s WHERE id IN (%s, %s, %s) AND k = %s", (1, "a", "b", "c", 2))
    assert sqlor_adapter.bound(sor, sql, {"s": 1, "ids": [], "k": 2}) == (
        "UPDATE t SET s = %s WHERE id IN (NULL) AND k = %s", (1, 2))


def test_on_mysql_the_parameters_a_statement_decodes_from_base64_are_sent_so_and_no_other():
    # aiomysql cannot send bytes, and escapes long text that is not ASCII slowly (the module's head)
    mysql = sqlor_adapter.new_sqlor(sqlor_adapter.MYSQL_DRIVER, {"host": "h", "db": "d"})
    sql = ("INSERT INTO a (k, c, p) VALUES (${k}$, CONVERT(FROM_BASE64(${c}$) USING utf8mb4), "
           "FROM_BASE64(${p}$))")
    row = {"k": "草稿", "c": "草稿 'x' \\ é", "p": b"\x00\xff"}
    marked, args = sqlor_adapter.bound(mysql, sql, row)
    assert marked.endswith("(%s, CONVERT(FROM_BASE64(%s) USING utf8mb4), FROM_BASE64(%s))")
    assert args == ("草稿", base64.b64encode(row["c"].encode("utf-8")).decode("ascii"), "AP8=")
    assert sqlor_adapter.bound(mysql, sql, {"k": "k", "c": None, "p": None})[1] == ("k", None, None)
    marked, args = sqlor_adapter.bound_many(mysql, sql, [row, {"k": "k2", "c": "", "p": None}])
    assert marked.count("FROM_BASE64(%s)") == 4 and args[3:] == ("k2", "", None)
    assert args[:3] == sqlor_adapter.bound(mysql, sql, row)[1]


async def test_an_artifact_of_any_text_is_stored_and_read_back_unchanged(storage, tenant):
    # on MySQL its content goes as base64 of its UTF-8 (insert_artifact :mysql), on SQLite as text
    text = to_json({"text": "草稿 'quoted' \"double\" back\\slash \n\r\t \x1a nul\u0000 😀 é" * 50})
    await storage.atomic(lambda tx: tx.execute(
        "insert_artifact", id=new_id(), tenant_id=tenant, task_id="t1", step_name="a", kind="output", version=1,
        content=text, packed=None, source="engine", lineage="{}", now=now_ms()))
    async with storage.transaction() as tx:
        row = await tx.fetch_one("get_artifact", tenant_id=tenant, task_id="t1", step_name="a", kind="output",
                                 version=1)
    assert row["content"] == text and row["packed"] is None


async def test_rows_convert_decimals_and_dates_as_sqlor_does_and_leave_the_rest(storage):
    # only the columns of a converted type go through sqlor's db_type_2_py_type (fetch_rows)
    sql = ("SELECT 7 AS n, 'x' AS t, NULL AS z, 1.5e0 AS f, CAST(1.25 AS DECIMAL(5,2)) AS d, "
           "CAST('2026-11-29 10:11:12' AS DATETIME) AS dt, CAST('2026-11-29' AS DATE) AS day, "
           "(SELECT SUM(x) FROM (SELECT 2 AS x UNION ALL SELECT 3) s) AS total, X'00ff' AS raw")
    if storage.connector.dialect == "sqlite":
        sql = "SELECT 7 AS n, 'x' AS t, NULL AS z, 1.5 AS f, 1.25 AS d, X'00ff' AS raw"
    async with storage.connector.session() as sor:
        [row] = await rows(sor, sql, {})
    assert row["n"] == 7 and row["t"] == "x" and row["z"] is None and row["f"] == 1.5
    assert row["d"] == 1.25 and type(row["d"]) is float
    assert row["raw"] == b"\x00\xff"
    if storage.connector.dialect != "sqlite":
        assert row["dt"] == "2026-11-29 10:11:12" and row["day"] == "2026-11-29"
        assert row["total"] == 5.0 and type(row["total"]) is float  # SUM of integers is a DECIMAL
