"""The module's code labels (``init/data.json``) written into the host's appcodes tables.

An ecosystem host keeps the labels of coded values (statuses, kinds) in appbase's
two tables: ``appcodes`` (``id, name, hierarchy_flg``: one row per code set) and
``appcodes_kv`` (``id, parentid, k, v``: one row per value of a set, ``parentid``
naming the set). A module ships its sets in ``init/data.json``; there is no public
loader, so this is one. The module's sets are replaced whole, in one transaction:
afterwards the tables hold exactly the file's rows for those sets (a value dropped
from the file goes), other sets are untouched, and loading twice is harmless.

    python -m pipeline_service load-codes --db mysql://user:pw@host:3306/appbase_db
"""
import json
from pathlib import Path

from ..exceptions import InvalidInputError, SchemaMissingError
from ..shipped import shipped
from ..store.storage import Storage

SETS = "appcodes"
VALUES = "appcodes_kv"
FIELDS = {SETS: ("id", "name", "hierarchy_flg"), VALUES: ("id", "parentid", "k", "v")}


def data_file() -> Path:
    """init/data.json: the copy installed with the package, or the source tree's."""
    return shipped("init_data/data.json", "init/data.json")


def read_codes(path=None):
    path = Path(path) if path is not None else data_file()
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the code labels from {path}: {exc}") from None


def check_codes(data):
    """The (sets, values) rows of a data.json document; InvalidInputError if any row is wrong."""
    if not isinstance(data, dict) or set(data) != set(FIELDS):
        raise InvalidInputError(f"code labels are an object with exactly the lists {list(FIELDS)}")
    tables = {table: [_row(table, i, row) for i, row in enumerate(_rows(data, table))] for table in FIELDS}
    set_ids = [row["id"] for row in tables[SETS]]
    for table, rows in tables.items():
        _unique(table, [row["id"] for row in rows], "id")
    _unique(VALUES, [(row["parentid"], row["k"]) for row in tables[VALUES]], "(parentid, k)")
    orphans = sorted({row["parentid"] for row in tables[VALUES]} - set(set_ids))
    if orphans:
        raise InvalidInputError(f"{VALUES} rows name code sets that {SETS} does not define: {orphans}")
    return tables[SETS], tables[VALUES]


def _rows(data, table):
    rows = data[table]
    if not isinstance(rows, list):
        raise InvalidInputError(f"{table!r} must be a list of rows, got {type(rows).__name__}")
    return rows


def _row(table, index, row):
    fields = FIELDS[table]
    if not isinstance(row, dict) or set(row) != set(fields):
        raise InvalidInputError(f"{table}[{index}] must have exactly the fields {list(fields)}, got {row!r}")
    empty = [name for name in fields if not isinstance(row[name], str) or not row[name].strip()]
    if empty:
        raise InvalidInputError(f"{table}[{index}] ({row.get('id')!r}): {empty} must be non-empty text")
    return dict(row)


def _unique(table, keys, what):
    seen, twice = set(), set()
    for key in keys:
        (twice if key in seen else seen).add(key)
    if twice:
        raise InvalidInputError(f"{table} has the same {what} more than once: {sorted(twice)}")


async def load_codes(database, path=None):
    """Write the code sets of ``path`` (default: the module's init/data.json) into the
    appcodes tables of ``database`` (a URL or a database description)."""
    sets, values = check_codes(read_codes(path))
    storage = Storage.from_description(database)
    try:
        async with storage.transaction() as tx:
            ids = [row["id"] for row in sets]
            tx.defer("delete_appcodes_kv", ids=ids)
            tx.defer("delete_appcodes", ids=ids)
            tx.defer_many("insert_appcode", sets)
            tx.defer_many("insert_appcode_kv", values)
    except SchemaMissingError as exc:
        raise SchemaMissingError(
            f"the host's {SETS} / {VALUES} tables are missing in {storage.describe()}: they are appbase's "
            "tables, created from the host's models (json2ddl), not by pipeline_service") from exc
    finally:
        await storage.close()
    return {SETS: len(sets), VALUES: len(values)}
