"""What a host installs besides the code: the rbac paths (scripts/load_path.py), the
code labels (init/data.json, loaded into the host's appcodes tables), the English
labels (i18n/), and the hint a missing table gives."""
import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from appPublic.myTE import MyTemplateEngine
from sqlor.ddl_template_sqlite3 import sqlite3_ddl_tmpl
from xls2ddl.json2ddl import xls2ddl

from conftest import mysql_admin, scratch_mysql_database, scratch_name
from pipeline_service import InvalidInputError
from pipeline_service.store import sqlor_adapter
from pipeline_service.host.appcodes import load_codes, read_codes
from pipeline_service.exceptions import SchemaMissingError
from pipeline_service.store.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
WWWROOT = ROOT / "wwwroot"


def load_script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_path = load_script(ROOT / "scripts" / "load_path.py")


def rbac_grants(registered, path):
    """rbac's rule (UserPermissions.check_roles_path, yumoqing/rbac rbac/userperm.py), restated:
    a registered path grants a request equal to it, or, when it ends with ``%`` or ``**``,
    every request that starts with what comes before the wildcard; ``/main/x`` is tried as
    ``/x`` too. A wildcard anywhere else is a literal character."""
    candidates = [path] + (["/" + path[len("/main/"):]] if path.startswith("/main/") else [])
    for perm in registered:
        if perm in candidates:
            return True
        prefix = perm[:-2] if perm.endswith("**") else perm[:-1] if perm.endswith("%") else None
        if prefix and any(candidate.startswith(prefix) for candidate in candidates):
            return True
    return False


def served_pages():
    """The URL of every page the module serves: its wwwroot folder mounted at /pipeline_service."""
    return sorted(f"/pipeline_service/{page.relative_to(WWWROOT).as_posix()}"
                  for pattern in ("*.dspy", "*.ui") for page in WWWROOT.rglob(pattern))


# ---- rbac paths -----------------------------------------------------------------

def test_rbac_grants_every_page_the_module_serves_and_nothing_else():
    registered = [path for _, path in load_path.PATHS]
    assert {role for role, _ in load_path.PATHS} == {"logined"}
    assert len(served_pages()) == 2 * len(load_path.OPERATIONS) + len(load_path.PAGES) and all(
        rbac_grants(registered, page) for page in served_pages())
    assert sorted(registered) == served_pages()  # no stale path, no broader one
    for other in ("/pipeline_service/secret.dspy", "/pipeline_service/api/secret.dspy", "/pipeline_servicex/list.dspy",
                  "/rbac/user/up_login.dspy", "/pipeline_service"):
        assert not rbac_grants(registered, other), other


def test_rbac_takes_a_wildcard_literally_unless_it_ends_the_path():
    assert not any(rbac_grants(["/pipeline_service/%.dspy"], page) for page in served_pages())
    assert all(rbac_grants(["/pipeline_service/%"], page) for page in served_pages())
    assert rbac_grants(["/pipeline_service/**"], "/main/pipeline_service/list.dspy")


def fake_host(root, exit_code=0):
    """A host root whose set_role_perm.py records its arguments (the real one writes rbac's tables)."""
    (root / "set_role_perm.py").write_text(
        "import sys\n"
        f"open({str(root / 'calls.txt')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"sys.exit({exit_code})\n")
    return root


def run_load_path(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "load_path.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_load_path_registers_every_path_through_the_hosts_set_role_perm(tmp_path):
    host = fake_host(tmp_path)
    done = run_load_path("--host-root", str(host))
    assert done.returncode == 0, done.stderr
    calls = (host / "calls.txt").read_text().splitlines()
    assert calls == [f"{role} {path}" for role, path in load_path.PATHS]
    assert done.stdout.count("ok  ") == len(load_path.PATHS)


def test_load_path_reports_a_refused_path_and_a_missing_host(tmp_path):
    done = run_load_path("--host-root", str(fake_host(tmp_path, exit_code=1)))
    assert done.returncode == 1 and done.stdout.count("FAIL") == len(load_path.PATHS)
    missing = run_load_path("--host-root", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no set_role_perm.py" in missing.stderr


# ---- appcodes -------------------------------------------------------------------

# appbase's two code tables, as a host's models describe them (rbac's users model names
# appcodes_kv as its code source; the fields are those of every module's init/data.json)
CODE_MODELS = {
    "appcodes": [("id", "str", 32, "no"), ("name", "str", 255, "yes"), ("hierarchy_flg", "str", 1, "yes")],
    "appcodes_kv": [("id", "str", 100, "no"), ("parentid", "str", 32, "yes"), ("k", "str", 32, "yes"),
                    ("v", "str", 255, "yes")],
}


def code_model(table):
    fields = [{"name": n, "title": n, "type": t, "length": length, "dec": 0, "nullable": nullable}
              for n, t, length, nullable in CODE_MODELS[table]]
    return {"summary": [{"name": table, "title": table, "primary": ["id"], "catelog": "entity"}],
            "fields": fields, "indexes": [], "codes": []}


def create_code_tables(backend, tmp_path):
    """A database URL with appcodes / appcodes_kv created from their models by the ecosystem's DDL templates."""
    models = {table: code_model(table) for table in CODE_MODELS}
    if backend == "mysql":
        name = scratch_name("codes")
        url = scratch_mysql_database(name)
        conn = mysql_admin(database=name, client_flag=65536)  # MULTI_STATEMENTS
        with conn.cursor() as cur:
            for table, model in models.items():
                (tmp_path / f"{table}.json").write_text(json.dumps(model))
                cur.execute(xls2ddl(str(tmp_path / f"{table}.json"), "mysql"))
                while cur.nextset():
                    pass
        conn.close()
        return url
    path = tmp_path / "host.db"
    with sqlite3.connect(path) as conn:
        for model in models.values():
            conn.executescript(MyTemplateEngine([]).renders(sqlite3_ddl_tmpl, model))
    return f"sqlite:///{path}"


@pytest.fixture
def codes_db(backend, tmp_path):
    return create_code_tables(backend, tmp_path)


async def table_rows(url, table):
    storage = Storage.from_description(url)
    try:
        async with storage.connector.session() as sor:
            await sqlor_adapter.run(sor, f"SELECT * FROM {table} ORDER BY id", {})
            return [dict(row) for row in await sqlor_adapter.fetch_rows(sor)]
    finally:
        await storage.close()


async def run_sql(url, sql, params):
    storage = Storage.from_description(url)
    try:
        async with storage.connector.session() as sor:
            await sqlor_adapter.run(sor, sql, params)
            await sqlor_adapter.commit(sor)
    finally:
        await storage.close()


async def test_load_codes_writes_the_modules_code_sets_and_twice_is_harmless(codes_db):
    shipped = read_codes()
    counts = {"appcodes": len(shipped["appcodes"]), "appcodes_kv": len(shipped["appcodes_kv"])}
    assert await load_codes(codes_db) == counts
    assert await load_codes(codes_db) == counts
    assert await table_rows(codes_db, "appcodes") == sorted(shipped["appcodes"], key=lambda r: r["id"])
    assert await table_rows(codes_db, "appcodes_kv") == sorted(shipped["appcodes_kv"], key=lambda r: r["id"])
    labels = {(r["parentid"], r["k"]): r["v"] for r in await table_rows(codes_db, "appcodes_kv")}
    assert labels[("pipeline_task_status", "running")] == "执行中"


async def test_loading_replaces_the_modules_sets_and_leaves_the_hosts_other_sets(codes_db):
    await run_sql(codes_db, "INSERT INTO appcodes (id, name, hierarchy_flg) VALUES ('user_status', '用户状态', '0')", {})
    await run_sql(codes_db, "INSERT INTO appcodes_kv (id, parentid, k, v) VALUES ('user_status_0', 'user_status', "
                            "'0', '可用'), ('pipeline_task_status_old', 'pipeline_task_status', 'old', '旧')", {})
    await load_codes(codes_db)
    values = {r["id"] for r in await table_rows(codes_db, "appcodes_kv")}
    assert "user_status_0" in values and "pipeline_task_status_old" not in values and len(values) == len(read_codes()["appcodes_kv"]) + 1
    assert "user_status" in {r["id"] for r in await table_rows(codes_db, "appcodes")}


@pytest.mark.parametrize("data, message", [
    ([], "exactly the lists"),
    ({"appcodes": []}, "exactly the lists"),
    ({"appcodes": {}, "appcodes_kv": []}, "must be a list"),
    ({"appcodes": [{"id": "a", "name": "A"}], "appcodes_kv": []}, "exactly the fields"),
    ({"appcodes": [{"id": "a", "name": " ", "hierarchy_flg": "0"}], "appcodes_kv": []}, "non-empty text"),
    ({"appcodes": [{"id": "a", "name": "A", "hierarchy_flg": 0}], "appcodes_kv": []}, "non-empty text"),
    ({"appcodes": [{"id": "a", "name": "A", "hierarchy_flg": "0"}] * 2, "appcodes_kv": []}, "same id"),
    ({"appcodes": [{"id": "a", "name": "A", "hierarchy_flg": "0"}],
      "appcodes_kv": [{"id": "a_1", "parentid": "b", "k": "1", "v": "one"}]}, "does not define: ['b']"),
    ({"appcodes": [{"id": "a", "name": "A", "hierarchy_flg": "0"}],
      "appcodes_kv": [{"id": "a_1", "parentid": "a", "k": "1", "v": "one"},
                      {"id": "a_2", "parentid": "a", "k": "1", "v": "two"}]}, "same (parentid, k)"),
])
async def test_a_bad_code_file_is_refused_and_changes_nothing(codes_db, tmp_path, data, message):
    await load_codes(codes_db)
    before = await table_rows(codes_db, "appcodes_kv")
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        await load_codes(codes_db, bad)
    assert await table_rows(codes_db, "appcodes_kv") == before


async def test_an_unreadable_code_file_is_named(tmp_path):
    (tmp_path / "data.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot read the code labels from .*data.json"):
        await load_codes(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "data.json")


async def test_missing_code_tables_are_named_as_the_hosts(database):
    with pytest.raises(SchemaMissingError, match="appcodes / appcodes_kv tables are missing .* appbase's tables"):
        await load_codes(database)


def test_load_codes_is_a_command_of_the_cli(tmp_path):
    url = create_code_tables("sqlite", tmp_path)
    done = subprocess.run([sys.executable, "-m", "pipeline_service", "load-codes", "--db", url, "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    shipped = read_codes()
    assert json.loads(done.stdout) == {"appcodes": len(shipped["appcodes"]), "appcodes_kv": len(shipped["appcodes_kv"])}


def test_load_codes_on_a_missing_sqlite_file_says_so_and_creates_none(tmp_path):
    missing = tmp_path / "typo.db"
    done = subprocess.run([sys.executable, "-m", "pipeline_service", "load-codes", "--db", f"sqlite:///{missing}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    said = " ".join((done.stdout + done.stderr).split())  # the console wraps long lines
    assert done.returncode != 0 and "there is no SQLite database at" in said
    assert not missing.exists()


# ---- labels: Chinese first, English in i18n ------------------------------------------

def i18n(lang):
    lines = (ROOT / "i18n" / lang / "msg.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines)


def test_code_labels_are_chinese_with_english_in_i18n():
    shipped = read_codes()
    labels = [r["name"] for r in shipped["appcodes"]] + [r["v"] for r in shipped["appcodes_kv"]]
    assert all(re.search(r"[\u4e00-\u9fff]", label) for label in labels), labels
    english, chinese = i18n("en"), i18n("zh")
    assert english["执行中"] == "Running" and english["已跳过：条件不成立或上游步骤失败"] == "Skipped: its condition was false, or an upstream step failed"
    assert all(label in english and chinese[label] == label for label in labels)


def test_every_title_the_endpoints_show_has_an_english_translation():
    from pipeline_service.host import endpoints
    titles = [*endpoints.ERROR_TITLES.values(), endpoints.DEFAULT_ERROR_TITLE, *endpoints.DONE_TITLES.values()]
    english = i18n("en")
    assert all(title in english for title in titles), [t for t in titles if t not in english]


def test_every_word_the_dashboard_shows_has_an_english_translation():
    """dashboard.js writes its words as t("中文") (and a table's headings as lists of them):
    each has its English in i18n/en/msg.txt, so the page shows both."""
    script = (ROOT / "pipeline_service" / "web" / "static" / "dashboard.js").read_text(encoding="utf-8")
    words = set(re.findall(r'\bt\("([^"]+)"\)', script))
    for heading in re.findall(r'\[((?:"[^"]+", )*"[^"]+")\]\.map\(\(h\)', script):
        words |= set(re.findall(r'"([^"]+)"', heading))
    words |= set(re.findall(r':\s*"([\u4e00-\u9fff]+)"', script.split("CHOICE_WORDS = ", 1)[1].split("\n", 1)[0]))
    english = i18n("en")
    assert len(words) > 60 and not [w for w in sorted(words) if w not in english]


# ---- the hint a missing table gives --------------------------------------------------

async def test_the_missing_table_hint_names_the_command_that_creates_it(backend, tmp_path):
    url = (scratch_mysql_database(scratch_name("hint")) if backend == "mysql"
           else f"sqlite:///{tmp_path / 'empty.db'}")
    storage = Storage.from_description(url)
    try:
        with pytest.raises(SchemaMissingError) as missing:
            await storage.probe("get_pipeline_definition", pipeline_id="p")
        command = re.search(r"`python -m pipeline_service ([^`]*) --db \.\.\.`", str(missing.value)).group(1)
        assert command == "create-schema --with-reference"
        await storage.close()
        done = subprocess.run([sys.executable, "-m", "pipeline_service", *command.split(), "--db", url],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.returncode == 0, done.stderr
        assert await storage.probe("get_pipeline_definition", pipeline_id="p") == []  # the hint was true
    finally:
        await storage.close()
