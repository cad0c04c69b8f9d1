"""The schema, read from ``models/*.json`` (the single source of truth).

``json2ddl mysql models/`` (xls2ddl) renders destructive DDL (it starts with
``drop table if exists``).  This module renders the *non-destructive* form —
``CREATE TABLE IF NOT EXISTS`` plus the indexes — for MySQL and SQLite from the
same models, so a host can create missing tables safely.  ``CREATE INDEX IF NOT
EXISTS`` is MariaDB's and SQLite's, not MySQL 8's: on MySQL an index is created
plainly, and only when ``information_schema.statistics`` does not list it
(``MYSQL_INDEXES``, see ``Storage.create_missing_tables``).

Id columns carry ``"collation": "utf8mb4_bin"`` in the models: they compare
exactly (``ACME`` is not ``acme``).  The ecosystem's MySQL template has no
per-column collation (it ignores the key and gives every column
``utf8mb4_unicode_ci``), so after loading json2ddl's DDL, ``create-schema``
(``create_missing_tables``) upgrades those columns in place (``upgrade_statement``).
SQLite compares text exactly by default (BINARY).
"""
import json
from pathlib import Path

from ..exceptions import StorageError
from ..shipped import shipped

OWNED_TABLES = ("pipeline_tasks", "pipeline_task_steps", "pipeline_artifacts", "pipeline_schedules")
REFERENCE_TABLES = ("pipelines", "pipeline_steps")

# model type -> column type; `bigint` is spelled out in the models because the
# ecosystem's MySQL template maps `long` to a 32-bit int (too small for epoch ms).
MYSQL_TYPES = {"str": "VARCHAR({length})", "char": "CHAR({length})", "text": "LONGTEXT",
               "int": "INT", "short": "INT", "long": "BIGINT", "bigint": "BIGINT",
               "float": "DOUBLE", "date": "DATE", "datetime": "DATETIME", "bin": "LONGBLOB"}
SQLITE_TYPES = {"str": "TEXT", "char": "TEXT", "text": "TEXT", "int": "INTEGER", "short": "INTEGER",
                "long": "INTEGER", "bigint": "INTEGER", "float": "REAL", "date": "TEXT",
                "datetime": "TEXT", "bin": "BLOB"}


def models_dir() -> Path:
    """Where the models are: the copy installed with the package, or the source tree's."""
    return shipped("models", "models")


def load_model(table):
    folder = models_dir()
    path = folder / f"{table}.json" if table in OWNED_TABLES else folder / "reference" / f"{table}.json"
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


DEFAULT_COLLATION = "utf8mb4_unicode_ci"


def _column(field, types, dialect):
    col_type = types[field["type"]].format(length=field.get("length") or 255)
    not_null = " NOT NULL" if field.get("nullable") == "no" else ""
    charset = f" CHARACTER SET utf8mb4 COLLATE {field.get('collation', DEFAULT_COLLATION)}" if (
        dialect == "mysql" and field["type"] in ("str", "char", "text")) else ""
    return f"  {field['name']} {col_type}{charset}{not_null}"


def create_table_statement(table, dialect):
    model = load_model(table)
    types = MYSQL_TYPES if dialect == "mysql" else SQLITE_TYPES
    summary = model["summary"][0]
    primary = summary["primary"]
    primary = [primary] if isinstance(primary, str) else primary
    columns = [_column(f, types, dialect) for f in model["fields"]]
    columns.append(f"  PRIMARY KEY ({', '.join(primary)})")
    tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci" if dialect == "mysql" else ""
    return f"CREATE TABLE IF NOT EXISTS {table} (\n" + ",\n".join(columns) + f"\n){tail}"


def index_statements(table, dialect):
    """{index name: its ``CREATE INDEX``}: ``IF NOT EXISTS`` on SQLite; plain on MySQL, whose
    version 8 lacks it (MariaDB's syntax): run only for an index MYSQL_INDEXES does not list."""
    if_not_exists = "IF NOT EXISTS " if dialect == "sqlite" else ""
    statements = {}
    for index in load_model(table).get("indexes", []):
        unique = "UNIQUE " if index["idxtype"] == "unique" else ""
        name = f"{table}_{index['name']}"  # the same index name json2ddl gives: <table>_<index>
        statements[name] = f"CREATE {unique}INDEX {if_not_exists}{name} ON {table} ({', '.join(index['idxfields'])})"
    return statements


def exact_columns(table):
    """{column: collation} of the columns the model wants compared exactly (binary collation)."""
    return {f["name"]: f["collation"] for f in load_model(table)["fields"] if "collation" in f}


# the columns of one table as MySQL has them (run with ${table}$ bound)
MYSQL_COLUMNS = """SELECT column_name AS name, column_type AS type, is_nullable AS nullable,
    collation_name AS collation, column_comment AS comment FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = ${table}$"""
# the names of one table's indexes as MySQL has them (run with ${table}$ bound)
MYSQL_INDEXES = """SELECT DISTINCT index_name AS name FROM information_schema.statistics
    WHERE table_schema = DATABASE() AND table_name = ${table}$"""
# the columns of one table as SQLite has them (only their names are used there)
SQLITE_COLUMNS = "SELECT name FROM pragma_table_info(${table}$)"
COLUMNS = {"mysql": MYSQL_COLUMNS, "sqlite": SQLITE_COLUMNS}


def add_column_statements(table, dialect, columns):
    """``ALTER TABLE ... ADD COLUMN`` for each column of the model the table lacks (a table made
    by an older version); ``columns``: rows of COLUMNS[dialect].  Only nullable columns can be
    added to a table with rows: a NOT NULL one is a StorageError naming it."""
    have = {column["name"].lower() for column in columns}
    types = MYSQL_TYPES if dialect == "mysql" else SQLITE_TYPES
    statements = []
    for field in load_model(table)["fields"]:
        if field["name"] in have:
            continue
        if field.get("nullable") == "no":
            raise StorageError(f"table {table} has no column {field['name']} and it cannot be added in place "
                               "(NOT NULL without a default): migrate the table by hand")
        statements.append(f"ALTER TABLE {table} ADD COLUMN {_column(field, types, dialect).strip()}")
    return statements


def upgrade_statement(table, columns):
    """``ALTER TABLE ... MODIFY`` giving the exact-compare columns their collation, or None if
    they have it.  ``columns``: rows of MYSQL_COLUMNS.  Each column keeps its own type,
    length, nullability and comment (only the collation changes, so no value is cut); a
    binary collation tells apart all values the old one did, so unique keys still hold."""
    wanted = exact_columns(table)
    changes = []
    for column in columns:
        collation = wanted.get(column["name"].lower())
        if collation is None or column["collation"] == collation:
            continue
        not_null = " NOT NULL" if column["nullable"] == "NO" else " NULL"
        comment = " COMMENT '{}'".format(column["comment"].replace("\\", "\\\\").replace("'", "''")) \
            if column["comment"] else ""
        changes.append(f"MODIFY {column['name']} {column['type']} CHARACTER SET utf8mb4 COLLATE {collation}"
                       f"{not_null}{comment}")
    return f"ALTER TABLE {table} " + ", ".join(changes) if changes else None
