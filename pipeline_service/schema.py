"""The schema, read from ``models/*.json`` (the single source of truth).

``json2ddl mysql models/`` (xls2ddl) renders destructive DDL (it starts with
``drop table if exists``).  This module renders the *non-destructive* form —
``CREATE TABLE IF NOT EXISTS`` plus ``CREATE INDEX IF NOT EXISTS`` — for MySQL
and SQLite from the same models, so a host can create missing tables safely.
"""
import json
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
OWNED_TABLES = ("pipeline_tasks", "pipeline_task_steps", "pipeline_artifacts")
REFERENCE_TABLES = ("pipelines", "pipeline_steps")

# model type -> column type; `bigint` is spelled out in the models because the
# ecosystem's MySQL template maps `long` to a 32-bit int (too small for epoch ms).
MYSQL_TYPES = {"str": "VARCHAR({length})", "char": "CHAR({length})", "text": "LONGTEXT",
               "int": "INT", "short": "INT", "long": "BIGINT", "bigint": "BIGINT",
               "float": "DOUBLE", "date": "DATE", "datetime": "DATETIME"}
SQLITE_TYPES = {"str": "TEXT", "char": "TEXT", "text": "TEXT", "int": "INTEGER", "short": "INTEGER",
                "long": "INTEGER", "bigint": "INTEGER", "float": "REAL", "date": "TEXT",
                "datetime": "TEXT"}


def models_dir():
    """Where the models are: the source tree, or the copy installed with the package."""
    installed = Path(__file__).resolve().parent / "models"
    return installed if installed.is_dir() else MODELS_DIR


def load_model(table):
    folder = models_dir()
    path = folder / f"{table}.json" if table in OWNED_TABLES else folder / "reference" / f"{table}.json"
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _column(field, types, dialect):
    col_type = types[field["type"]].format(length=field.get("length") or 255)
    not_null = " NOT NULL" if field.get("nullable") == "no" else ""
    charset = " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" if (
        dialect == "mysql" and field["type"] in ("str", "char", "text")) else ""
    return f"  {field['name']} {col_type}{charset}{not_null}"


def create_statements(table, dialect):
    """``CREATE ... IF NOT EXISTS`` statements for one table in one dialect."""
    model = load_model(table)
    types = MYSQL_TYPES if dialect == "mysql" else SQLITE_TYPES
    summary = model["summary"][0]
    primary = summary["primary"]
    primary = [primary] if isinstance(primary, str) else primary
    columns = [_column(f, types, dialect) for f in model["fields"]]
    columns.append(f"  PRIMARY KEY ({', '.join(primary)})")
    tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci" if dialect == "mysql" else ""
    statements = [f"CREATE TABLE IF NOT EXISTS {table} (\n" + ",\n".join(columns) + f"\n){tail}"]
    for index in model.get("indexes", []):
        unique = "UNIQUE " if index["idxtype"] == "unique" else ""
        # the same index name json2ddl gives: <table>_<index>
        statements.append(f"CREATE {unique}INDEX IF NOT EXISTS {table}_{index['name']} "
                          f"ON {table} ({', '.join(index['idxfields'])})")
    return statements


def column_names(table):
    return [f["name"] for f in load_model(table)["fields"]]
