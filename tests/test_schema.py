"""The models are the schema: json2ddl's DDL applies to MariaDB; the safe path matches it."""
import shutil
import subprocess
from pathlib import Path

from pipeline_service import schema
from pipeline_service.ids import now_ms
from pipeline_service.storage import Storage
from conftest import mysql_admin, scratch_mysql_database, scratch_name

ROOT = Path(__file__).resolve().parent.parent


def json2ddl_output():
    exe = shutil.which("json2ddl")
    assert exe, "the json2ddl CLI (xls2ddl) must be installed with the project"
    done = subprocess.run([exe, "mysql", str(ROOT / "models")], capture_output=True, text=True, check=True)
    return done.stdout


def columns_of(database):
    conn = mysql_admin(database=database)
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s", (database,))
        found = {(t.lower(), c.lower()): d.lower() for t, c, d in cur.fetchall()}
        cur.execute("SELECT DISTINCT table_name, index_name FROM information_schema.statistics "
                    "WHERE table_schema = %s", (database,))
        indexes = {(t.lower(), i.lower()) for t, i in cur.fetchall()}
    conn.close()
    return found, indexes


def test_every_owned_model_has_tenant_id_and_a_tenant_led_index():
    for table in schema.OWNED_TABLES:
        model = schema.load_model(table)
        assert "tenant_id" in [f["name"] for f in model["fields"]], table
        assert any(ix["idxfields"][0] == "tenant_id" for ix in model["indexes"]), table
        assert model["summary"][0]["primary"] == ["id"]
    steps = schema.load_model("pipeline_task_steps")
    assert {"name": "ready", "idxtype": "index", "idxfields": ["status", "tenant_id", "ready_at"]} in steps["indexes"]


def test_json2ddl_output_applies_cleanly_to_mariadb():
    ddl = json2ddl_output()
    assert ddl.count("drop table if exists") == 3, "json2ddl models/ covers exactly the three owned tables"
    database = scratch_name("ddl")
    scratch_mysql_database(database)
    conn = mysql_admin(database=database, client_flag=65536)  # MULTI_STATEMENTS
    with conn.cursor() as cur:
        cur.execute(ddl)
        while cur.nextset():
            pass
    conn.close()
    columns, indexes = columns_of(database)
    for table in schema.OWNED_TABLES:
        for name in schema.column_names(table):
            assert (table, name) in columns, (table, name)
        for index in schema.load_model(table)["indexes"]:
            assert (table, f"{table}_{index['name']}") in indexes
    assert columns[("pipeline_tasks", "created_at")] == "bigint"
    assert columns[("pipeline_artifacts", "content")] == "longtext"


async def test_safe_path_builds_the_same_columns_and_keeps_rows():
    ddl_db = scratch_name("ddl2")
    scratch_mysql_database(ddl_db)
    conn = mysql_admin(database=ddl_db, client_flag=65536)
    with conn.cursor() as cur:
        cur.execute(json2ddl_output())
        while cur.nextset():
            pass
    conn.close()
    safe_db = scratch_name("safe")
    url = scratch_mysql_database(safe_db)
    storage = Storage.from_description(url)
    await storage.create_missing_tables()
    async with storage.transaction() as tx:
        await tx.execute("insert_task", id="keep-me", tenant_id="t", pipeline_id="p", owner_id="o", title="",
                         params="{}", status="pending", now=now_ms())
    await storage.create_missing_tables()
    async with storage.transaction() as tx:
        assert (await tx.fetch_one("get_task", tenant_id="t", task_id="keep-me"))["id"] == "keep-me"
    await storage.close()
    assert columns_of(safe_db) == columns_of(ddl_db)


def test_reference_models_are_kept_apart():
    for table in schema.REFERENCE_TABLES:
        assert not (ROOT / "models" / f"{table}.json").exists()
        assert (ROOT / "models" / "reference" / f"{table}.json").exists()
    fields = {f["name"] for f in schema.load_model("pipeline_steps")["fields"]}
    assert {"id", "pipeline_id", "step_name", "step_type", "depends_on", "config", "seq"} <= fields
