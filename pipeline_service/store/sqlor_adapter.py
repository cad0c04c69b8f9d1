"""The one place that knows sqlor 2.1.2's defects (docs/ARCHITECTURE.md, "sqlor 2.1.2") and works around them.

We keep sqlor for what it does well — its dialect classes, its ``${name}$``
parameter binding and its row conversion — and replace what is broken:

* its pool never reuses a connection and ``MySqlor.close()`` raises, so MySQL
  connections come from aiomysql's own pool and are merely *bound* to a sqlor
  dialect object for the length of one transaction;
* ``sqlorContext`` swallows exceptions into a process-wide attribute, so we
  never use it: commit and rollback are called by our own transaction context;
* sqlor ships no SQLite driver that connects, so ``pipeline_sqlite`` below is a
  small driver plugin (found by ``sqlorFactory`` like any other driver);
* the driver name ``aiomysql`` resolves to a class without ``connect()``, so
  MySQL is always created as driver ``mysql``;
* ``SQLor.__init__`` decrypts any password it is given (a plaintext one fails), so
  sqlor is never given one;
* aiomysql 0.3.2 cannot send bytes with PyMySQL 1.2.4 (it calls
  ``escape_bytes_prefixed``, which that PyMySQL leaves a placeholder string), and it escapes
  text with ``str.translate``, which is slow on text that is not ASCII (~1 ms for 20 KB of
  accented or Chinese text, 20x the cost of the rest of its insert): a parameter the
  statement decodes with ``FROM_BASE64(...)`` on MySQL (queries.sql's ``{text:x}`` and
  ``{bytes:x}``: an artifact's content and packed bytes, a task's params, a step's config) is
  sent as base64 text — bytes as they are, text as its UTF-8 (``_base64``);
* sqlor re-translates a statement on every call (regexes, a namespace copy and an
  ``eval`` per parameter: about 40% of the engine's CPU time in a profile), so each
  statement is translated by sqlor *once* (per set of optional ``$<name>$`` blocks
  left out) — into the driver's placeholder SQL and its parameter order — and cached.
"""
import binascii
import re

import aiosqlite
from appPublic.dictObject import DictObject
from pymysql.constants import FIELD_TYPE
from sqlor.dbpools import sqlorFactory
from sqlor.sor import db_type_2_py_type
from sqlor.sqlite3or import SQLite3or

SQLITE_DRIVER = "pipeline_sqlite"
MYSQL_DRIVER = "mysql"


class AiosqliteSqlor(SQLite3or):
    """sqlor driver plugin: SQLite through aiosqlite."""

    @classmethod
    def isMe(cls, name):
        return name == SQLITE_DRIVER

    async def connect(self):
        self.conn = await aiosqlite.connect(self.dbdesc.path, isolation_level="")
        self.dbname = self.dbdesc.path

    async def close(self):
        await self.conn.close()


def new_sqlor(driver, kwargs):
    """A sqlor dialect object for ``driver`` created through sqlor's own factory.

    sqlor is only our dialect (SQL translation, row conversion): it never connects
    and never sees a password — ``SQLor.__init__`` would "decrypt" whatever password it
    is given with the host's ``password_key`` (a plaintext one then fails, and a
    standalone process has no config.json at all).  The connector holds the real
    connection arguments; host/config.py decrypts a host's password exactly once.
    """
    safe = {key: value for key, value in kwargs.items() if key != "password"}
    sor = sqlorFactory(DictObject(driver=driver, kwargs=DictObject(**safe)))
    if type(sor).isMe(driver) is not True:
        raise RuntimeError(f"sqlor resolved driver {driver!r} to {type(sor).__name__}")
    return sor


async def bind(sor, conn):
    """Attach a live DB-API connection and a fresh cursor to a sqlor object."""
    sor.conn = conn
    sor.cur = await conn.cursor()
    sor.dataChanged = False
    return sor


async def unbind(sor):
    cur, sor.cur = sor.cur, None
    if cur is not None:
        await cur.close()


_translations: dict[tuple, tuple[str, tuple[str, ...], list[str], frozenset[int]]] = {}  # see translate()
BASE64_CALL = "FROM_BASE64("
PLACEHOLDER = re.compile(r"\$\{(\w+)\}\$")
OPTIONAL_BLOCK = re.compile(r"\$<(\w+)>\$")


def translate(sor, sql, absent=frozenset()):
    """sqlor's translation of ``sql`` for ``sor``'s dialect: (driver SQL, parameter names in
    order, the driver SQL split at its placeholders, the positions of the parameters sent in
    base64: those the SQL passes to FROM_BASE64, on MySQL).

    sqlor itself does the parsing, once per statement (and per set of ``absent``
    optional blocks, which sqlor drops): we hand it a namespace mapping every name
    to itself (None for an absent block) and read the order back from what it binds.
    """
    key = (type(sor), sql, absent)
    found = _translations.get(key)
    if found is None:
        namespace = {name: (None if name in absent else name) for name in PLACEHOLDER.findall(sql)}
        namespace.update({name: None for name in absent})
        marked, bound_ = sor.maskingSQL(sql, namespace)
        order = tuple(d["value"] for d in bound_)
        pieces = marked.split(sor.placeHolder(None))
        if len(pieces) != len(order) + 1:  # a placeholder-like text of its own: never expand blindly
            raise ValueError(f"cannot tell the parameters of {sql!r} apart in {marked!r}")
        encoded = frozenset() if is_sqlite(sor) else frozenset(
            i for i, piece in enumerate(pieces[:-1]) if piece.endswith(BASE64_CALL))
        found = _translations[key] = (marked, order, pieces, encoded)
    return found


def bound(sor, sql, params):
    """A statement ready for the driver: (driver SQL, argument tuple).

    A list value (``IN (${ids}$)``) becomes one placeholder per item — only the
    number of placeholders comes from the data, never a value; an empty list
    becomes ``NULL`` (``IN (NULL)`` matches nothing).
    """
    absent = frozenset(n for n in OPTIONAL_BLOCK.findall(sql) if params.get(n) is None) if "$<" in sql else frozenset()
    marked, order, pieces, encoded = translate(sor, sql, absent)
    values = [params[n] for n in order]
    if encoded:
        values = [_base64(v) if i in encoded else v for i, v in enumerate(values)]
    if not any(isinstance(v, (list, tuple)) for v in values):
        return marked, tuple(values)
    hold, parts, args = sor.placeHolder(None), [pieces[0]], []
    for value, piece in zip(values, pieces[1:]):
        if isinstance(value, (list, tuple)):
            parts.append(", ".join([hold] * len(value)) or "NULL")
            args.extend(value)
        else:
            parts.append(hold)
            args.append(value)
        parts.append(piece)
    return "".join(parts), tuple(args)


def bound_many(sor, sql, rows):
    """A single-row ``INSERT ... VALUES (...)`` for every dict in ``rows``, bound as one
    multi-row statement: sqlor translates the one-row statement once; its VALUES
    tuple is repeated."""
    marked, order, _, encoded = translate(sor, sql)
    head, keyword, values = marked.rpartition("VALUES")
    if not keyword:
        raise ValueError("a multi-row statement needs an INSERT ... VALUES statement")
    if encoded:
        args = tuple(_base64(row[n]) if i in encoded else row[n] for row in rows for i, n in enumerate(order))
    else:
        args = tuple(row[n] for row in rows for n in order)
    return f"{head}VALUES {', '.join([values.strip()] * len(rows))}", args


def _base64(value):
    """A parameter the statement decodes with FROM_BASE64, as the driver sends it (see the
    module's head): bytes, or text as its UTF-8, in base64; None stays NULL."""
    if value is None:
        return None
    data = value.encode("utf-8") if isinstance(value, str) else value
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def bound_union(sor, sql, rows):
    """One statement returning the rows of the SELECT ``sql`` bound with each dict in
    ``rows`` (UNION ALL: one round trip for all).  Each branch keeps its own ORDER BY,
    LIMIT and locking clause: in parentheses on MySQL, as a subquery on SQLite (whose
    compound SELECTs take neither)."""
    parts = [bound(sor, sql, params) for params in rows]
    if len(parts) == 1:
        return parts[0]
    before, after = ("SELECT * FROM (", ")") if is_sqlite(sor) else ("(", ")")
    return (" UNION ALL ".join(before + marked + after for marked, _ in parts),
            tuple(arg for _, args in parts for arg in args))


def is_sqlite(sor):
    return isinstance(sor, AiosqliteSqlor)


async def execute(sor, statements):
    """Run bound statements in order; the cursor is left on the last one's result.

    On MySQL they go as one multi-statement query — one round trip, however many
    (aiomysql always enables CLIENT.MULTI_STATEMENTS); the server stops at the first
    failing statement, whose error is raised here.  SQLite, in process, runs them
    one after another.
    """
    cur = sor.cur
    if is_sqlite(sor) or len(statements) == 1:
        for marked, args in statements:
            await cur.execute(marked, args)
        return
    await cur.execute(";\n".join(marked for marked, _ in statements),
                      tuple(arg for _, args in statements for arg in args))
    while await cur.nextset():  # every result is read, so errors surface and the last one stays
        pass


async def run(sor, sql, params):
    """Execute one data-changing statement; return the affected row count."""
    await execute(sor, [bound(sor, sql, params)])
    return sor.cur.rowcount


# The MySQL column types whose values sqlor's conversion changes (Decimal to float, a date or
# time stamp to text).  It leaves every other value as it is, SQLite's included (without
# detect_types its driver returns only int, float, str, bytes and None), so only columns of
# these types are converted: calling it on every value cost ~5% of the engine's CPU time.
CONVERTED_TYPES = frozenset({FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE,
                             FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP})


async def fetch_rows(sor):
    """The rows of the cursor's current result as plain dicts (values converted as sqlor does)."""
    cur = sor.cur
    names = [d[0].lower() for d in cur.description]
    rows = await cur.fetchall()
    converted = [] if is_sqlite(sor) else [i for i, d in enumerate(cur.description) if d[1] in CONVERTED_TYPES]
    if not converted:
        return [dict(zip(names, row)) for row in rows]
    return [_converted(names, row, converted) for row in rows]


def _converted(names, row, columns):
    values = list(row)
    for i in columns:
        values[i] = db_type_2_py_type(values[i])
    return dict(zip(names, values))


async def commit(sor, statements=(), alone=False):
    """Commit, after running ``statements`` first: on MySQL all in one round trip, unless the
    COMMIT must go ``alone`` (a Galera node: a transaction aborted by a conflicting write from
    another node in the middle of a multi-statement query gets the error, yet the server runs
    the statements after the failing one in a new transaction, which a COMMIT in the same query
    would commit; sent on its own, the COMMIT never follows an error: the rollback discards them)."""
    if statements and not is_sqlite(sor) and not alone:
        await execute(sor, [*statements, ("COMMIT", ())])
        return
    if statements:
        await execute(sor, statements)
    await sor.commit()


async def rollback(sor):
    await sor.rollback()
