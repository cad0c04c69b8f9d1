"""The models are the schema: json2ddl's DDL applies to MariaDB; the safe path matches it."""
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline_service.store import schema
from pipeline_service.exceptions import InvalidInputError, NotFoundError
from pipeline_service.ids import now_ms
from pipeline_service.store.storage import Storage
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
    assert ddl.count("drop table if exists") == len(schema.OWNED_TABLES), "json2ddl models/ covers exactly the owned tables"
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
        for name in [f["name"] for f in schema.load_model(table)["fields"]]:
            assert (table, name) in columns, (table, name)
        for index in schema.load_model(table)["indexes"]:
            assert (table, f"{table}_{index['name']}") in indexes
    assert columns[("pipeline_tasks", "created_at")] == "bigint"
    assert columns[("pipeline_artifacts", "content")] == "longtext"


def json2ddl_database(name):
    """A scratch database made with the ecosystem's DDL (json2ddl's output, run as one
    multi-statement script); returns its URL."""
    url = scratch_mysql_database(name)
    conn = mysql_admin(database=name, client_flag=65536)  # CLIENT.MULTI_STATEMENTS
    with conn.cursor() as cur:
        cur.execute(json2ddl_output())
        while cur.nextset():
            pass
    conn.close()
    return url


async def test_safe_path_builds_the_same_columns_and_keeps_rows():
    ddl_db = scratch_name("ddl2")
    json2ddl_database(ddl_db)
    safe_db = scratch_name("safe")
    url = scratch_mysql_database(safe_db)
    storage = Storage.from_description(url)
    await storage.create_missing_tables()
    async with storage.transaction() as tx:
        await tx.execute("insert_task", id="keep-me", tenant_id="t", pipeline_id="p", owner_id="o", title="",
                         params="{}", status="pending", now=now_ms(), priority=5, idempotency_key=None,
                         schedule_id=None, scheduled_for=None)
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


def collations_of(database):
    conn = mysql_admin(database=database)
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name, column_type, is_nullable, collation_name, column_comment "
                    "FROM information_schema.columns WHERE table_schema = %s", (database,))
        found = {(t.lower(), c.lower()): rest for t, c, *rest in cur.fetchall()}
    conn.close()
    return found


def test_id_columns_compare_exactly_in_the_models():
    from pipeline_service.ids import MAX_ID, MAX_NAME
    for table in schema.OWNED_TABLES + schema.REFERENCE_TABLES:
        for field in schema.load_model(table)["fields"]:
            exact = field["name"] in ("id", "owner", "step_type", "step_name", "parent_step", "idempotency_key")
            is_id = exact or field["name"].endswith("_id")
            assert ("collation" in field) == is_id, (table, field["name"])
            if is_id and field["name"] not in ("owner", "idempotency_key"):  # a key: up to MAX_KEY
                step = field["name"].startswith("step_") or field["name"] == "parent_step"
                assert field["length"] == (MAX_NAME if step else MAX_ID)
    ddl = schema.create_table_statement("pipeline_tasks", "mysql")
    assert "tenant_id VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL" in ddl
    assert "title VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" in ddl


async def test_an_old_schema_gets_binary_id_columns_in_place_once(caplog):
    """json2ddl's DDL (the ecosystem's template gives every column utf8mb4_unicode_ci) with rows
    in it: create_missing_tables changes only the id columns' collation, keeps rows, types,
    nullability and comments, and does nothing the second time."""
    database = scratch_name("upgrade")
    url = json2ddl_database(database)
    before = collations_of(database)
    assert before[("pipeline_tasks", "tenant_id")][2] == "utf8mb4_unicode_ci"
    storage = Storage.from_description(url)
    async with storage.transaction() as tx:
        await tx.execute("insert_task", id="keep-me", tenant_id="acme", pipeline_id="p", owner_id="o", title="",
                         params="{}", status="pending", now=now_ms(), priority=5, idempotency_key=None,
                         schedule_id=None, scheduled_for=None)
    with caplog.at_level("WARNING", logger="pipeline_service.store.storage"):
        await storage.create_missing_tables()
    assert len([r for r in caplog.records if "binary collation" in r.message]) == len(schema.OWNED_TABLES)
    after = collations_of(database)
    for (table, column), (col_type, nullable, collation, comment) in after.items():
        wanted = schema.exact_columns(table).get(column)
        assert collation == (wanted or before[(table, column)][2]), (table, column)
        assert (col_type, nullable, comment) == tuple(before[(table, column)][i] for i in (0, 1, 3))
    caplog.clear()
    await storage.create_missing_tables()
    assert not [r for r in caplog.records if "binary collation" in r.message]
    assert collations_of(database) == after
    async with storage.transaction() as tx:
        assert (await tx.fetch_one("get_task", tenant_id="acme", task_id="keep-me"))["id"] == "keep-me"
        # ("acme " would still match: binary collations pad; the API refuses ids with edge whitespace)
        for other in ("ACME", "ácme"):
            assert await tx.fetch_one("get_task", tenant_id=other, task_id="keep-me") is None, other
    await storage.close()


async def test_a_case_insensitive_pipelines_table_never_lets_one_id_replace_another(make_service):
    """pipeline_core's own tables may keep utf8mb4_unicode_ci: 'ORG1' neither replaces nor reads 'org1'."""
    database = scratch_name("core")
    url = scratch_mysql_database(database)
    conn = mysql_admin(database=database)
    with conn.cursor() as cur:
        for table in schema.REFERENCE_TABLES:
            ddls = [schema.create_table_statement(table, "mysql"), *schema.index_statements(table, "mysql").values()]
            for ddl in ddls:
                cur.execute(ddl.replace("utf8mb4_bin", "utf8mb4_unicode_ci"))
    conn.close()
    service = make_service(url, autostart=False, require_handlers=False, create_schema=True)
    await service.define_pipeline("org1", [{"step_name": "a", "step_type": "t"}])
    with pytest.raises(InvalidInputError, match="collides with pipeline 'org1'"):
        await service.define_pipeline("ORG1", [{"step_name": "b", "step_type": "t"}])
    with pytest.raises(NotFoundError):
        await service.submit("acme", "ORG1", "o")
    task = await service.submit("acme", "org1", "o")
    assert [s["step_name"] for s in (await service.detail("acme", task["id"]))["steps"]] == ["a"]


async def test_indexes_are_created_without_the_mariadb_only_if_not_exists():
    """``CREATE INDEX IF NOT EXISTS`` is MariaDB syntax that MySQL 8 refuses: on MySQL an index
    is created plainly, only when information_schema does not list it (the same statements run
    here, on MariaDB): a missing index is made again, the present ones are left alone."""
    for table in schema.OWNED_TABLES + schema.REFERENCE_TABLES:
        for ddl in schema.index_statements(table, "mysql").values():
            assert "IF NOT EXISTS" not in ddl.upper(), ddl
    database = scratch_name("indexes")
    storage = Storage.from_description(scratch_mysql_database(database))
    await storage.create_missing_tables()
    wanted = columns_of(database)[1]
    assert ("pipeline_task_steps", "pipeline_task_steps_ready") in wanted
    conn = mysql_admin(database=database)
    with conn.cursor() as cur:
        cur.execute("DROP INDEX pipeline_task_steps_ready ON pipeline_task_steps")
    conn.close()
    await storage.create_missing_tables()
    await storage.create_missing_tables()
    await storage.close()
    assert columns_of(database)[1] == wanted
