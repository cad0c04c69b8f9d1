"""All of the package's database access: named statements run in transactions.

``Storage`` speaks in statements named in ``queries.sql``; it never builds SQL
from data.  ``transaction()`` commits when its block succeeds and, on any error
(cancellation included), rolls back and re-raises — it never swallows.
"""
import asyncio
import logging
import random
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from . import queries
from . import schema
from . import sqlor_adapter
from .connectors import MySQLConnector, SQLiteConnector, connector_for
from ..exceptions import DatabaseUnavailableError, NotFoundError, StorageError

log = logging.getLogger(__name__)
# sqlor treats these parameter names as paging/sorting instructions
RESERVED_PARAMS = {"page", "rows", "sort"}

Connector = MySQLConnector | SQLiteConnector
Row = dict[str, Any]  # one result row, column name -> value
T = TypeVar("T")
# branches of one UNION ALL statement (fetch_union): below SQLite's 500 terms of a compound SELECT
UNION_BRANCHES = 200


class Transaction:
    """One open transaction: run named statements with ``${name}$`` parameters.

    A write whose row count nobody needs is *deferred*: it is sent together with
    the transaction's next statement, or with its COMMIT — on MySQL in the same
    round trip (a multi-statement query).  Order is kept, so a later read sees it;
    an error in a deferred write is raised by the call that sends it, and the
    transaction rolls back as usual.
    """

    def __init__(self, sor: Any, connector: Connector) -> None:
        self._sor = sor  # sqlor's dialect object, bound to a live connection
        self._connector = connector
        self._deferred: list[Any] = []  # bound statements waiting for the next round trip
        self.committed_callbacks: list[Callable[[], object]] = []
        self.committing = False  # the COMMIT was sent: if it fails, whether it took effect is unknown

    @property
    def max_write_bytes(self) -> int | None:
        """The most one statement may carry (MySQL's max_allowed_packet, read at open), or None: no such limit."""
        return self._connector.max_packet

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once this transaction has committed (never if it rolls back)."""
        self.committed_callbacks.append(callback)

    def defer(self, name: str, /, **params: Any) -> None:
        """Queue a data-changing statement, sent with the next statement or the commit."""
        self._deferred.append(sqlor_adapter.bound(self._sor, *prepare(name, self._connector.statements, params)))

    def defer_many(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Queue an ``INSERT ... VALUES (...)`` for every dict in ``rows``, as one multi-row statement."""
        if not rows:
            return
        for row in rows:  # every row is checked before anything is queued
            sql, _ = prepare(name, self._connector.statements, row)
        self._deferred.append(sqlor_adapter.bound_many(self._sor, sql, rows))

    async def execute(self, name: str, /, **params: Any) -> int:
        """Run a data-changing statement now; return the number of rows it changed."""
        await self._send(name, params)
        return self._sor.cur.rowcount

    async def fetch_all(self, name: str, /, **params: Any) -> list[Row]:
        await self._send(name, params)
        return await sqlor_adapter.fetch_rows(self._sor)

    async def fetch_one(self, name: str, /, **params: Any) -> Row | None:
        found = await self.fetch_all(name, **params)
        return found[0] if found else None

    async def fetch_existing(self, name: str, what: str, /, **params: Any) -> Row:
        """The first row of the named SELECT, or NotFoundError "<what> does not exist" (every
        read is scoped by tenant: another tenant's row is indistinguishable from none)."""
        found = await self.fetch_one(name, **params)
        if found is None:
            raise NotFoundError(f"{what} does not exist")
        return found

    async def fetch_union(self, name: str, /, rows: Sequence[dict[str, Any]]) -> list[Row]:
        """The rows of the named SELECT run with every dict in ``rows``, as UNION ALL of one
        branch per dict: one round trip per UNION_BRANCHES branches (a step reading the outputs
        of 10,000 upstream steps must not meet SQLite's limit of 500 terms in a compound SELECT)."""
        for params in rows:  # every branch is checked before anything is sent
            sql, _ = prepare(name, self._connector.statements, params)
        found: list[Row] = []
        for start in range(0, len(rows), UNION_BRANCHES):
            await self._send_bound(sqlor_adapter.bound_union(self._sor, sql, rows[start:start + UNION_BRANCHES]))
            found += await sqlor_adapter.fetch_rows(self._sor)
        return found

    async def _send(self, name: str, params: dict[str, Any]) -> None:
        await self._send_bound(sqlor_adapter.bound(self._sor, *prepare(name, self._connector.statements, params)))

    async def _send_bound(self, statement: Any) -> None:
        batch, self._deferred = [*self._deferred, statement], []
        with driver_errors(self._connector):
            await sqlor_adapter.execute(self._sor, batch)

    async def commit(self) -> None:
        """Send what is deferred and commit (on MySQL, one round trip; two on a Galera node)."""
        batch, self._deferred = self._deferred, []
        self.committing = True
        with driver_errors(self._connector):
            await sqlor_adapter.commit(self._sor, batch, alone=self._connector.galera)


@contextmanager
def driver_errors(connector: Connector) -> Iterator[None]:
    """Re-raise a driver error as the package exception the connector maps it to, if any."""
    try:
        yield
    except Exception as exc:
        translated = connector.translate_error(exc)
        if translated is None:
            raise
        raise translated from exc


def prepare(name: str, dialect: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The named statement for ``dialect`` (a variant of queries.sql: the connector's
    ``statements``); checks every parameter is given (sqlor
    would otherwise bind a missing one silently).  A list value is expanded by the
    adapter: ``IN (${ids}$)`` becomes one bound parameter per item."""
    sql = queries.statement(name, dialect)
    missing = [p for p in statement_parameters(sql) if p not in params]
    if missing:
        raise StorageError(f"statement {name!r} needs parameters {missing}")
    return sql, params


_parameters_cache: dict[str, tuple[str, ...]] = {}


def statement_parameters(sql: str) -> tuple[str, ...]:
    names = _parameters_cache.get(sql)
    if names is None:
        names = _parameters_cache[sql] = tuple(dict.fromkeys(sqlor_adapter.PLACEHOLDER.findall(sql)))
        reserved = RESERVED_PARAMS.intersection(names)
        if reserved:
            raise StorageError(f"parameter names {sorted(reserved)} are reserved by sqlor")
    return names


ATTEMPTS = 8  # runs of one transaction body before a conflict is reported (atomic)
FIRST_PAUSE, LONGEST_PAUSE = 0.005, 0.5  # seconds between runs: doubling from the first, at most the longest


def retry_pause(attempt: int) -> float:
    """The pause after the ``attempt``-th run lost a conflict: doubling, bounded, and jittered
    (half to all of it) so that two transactions that collided do not collide again in step."""
    pause = min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (attempt - 1))
    return pause * (0.5 + random.random() / 2)


class Storage:
    """The database of one pipeline_service instance."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    @classmethod
    def from_description(cls, description: str | dict[str, Any]) -> "Storage":
        return cls(connector_for(description))

    @property
    def dialect(self) -> str:
        return self.connector.dialect

    def describe(self) -> str:
        return self.connector.describe()

    async def open(self) -> None:
        await self.connector.open()

    async def close(self) -> None:
        await self.connector.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.connector.session() as sor:
            tx = Transaction(sor, self.connector)
            try:
                yield tx
            except BaseException:
                await self._rollback_quietly(sor)
                raise
            try:
                await tx.commit()
            except Exception:
                await self._rollback_quietly(sor)
                raise
        for callback in tx.committed_callbacks:
            callback()

    async def probe(self, name: str, /, **params: Any) -> list[Row]:
        """Run a read-only statement outside any transaction (one round trip, no COMMIT):
        the executor's idle polling costs one query per poll this way."""
        async with self.connector.read_session() as sor:
            return await Transaction(sor, self.connector).fetch_all(name, **params)

    async def atomic(self, fn: Callable[[Transaction], Awaitable[T]], attempts: int = ATTEMPTS,
                     fenced: bool = False) -> T:
        """Run ``await fn(tx)`` in a transaction, again if the database chose it as a deadlock
        victim, a lock wait timed out or (Galera) its COMMIT failed certification — after a
        bounded, growing, jittered pause; a StorageError once ``attempts`` all were.  With
        several servers, a transaction that lost its server before its COMMIT was sent (so
        nothing of it was written) is run again on the next one; so is one whose COMMIT was
        sent if it is ``fenced`` (running it again after a COMMIT that did land changes
        nothing: an outcome checks its claim token on the locked rows)."""
        attempt = 0
        while True:  # every pass returns, raises, or runs the body again
            attempt += 1
            tx: Transaction | None = None
            try:
                async with self.transaction() as tx:
                    return await fn(tx)
            except Exception as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                moved = (isinstance(exc, DatabaseUnavailableError) and self.connector.several
                         and (fenced or not (tx is not None and tx.committing)))
                if not (moved or self.connector.retryable(cause)):
                    raise
                if attempt >= attempts:  # never the driver's own exception (see exceptions.py)
                    if moved:
                        raise
                    raise StorageError(f"{self.describe()} gave up a transaction after {attempts} attempts, "
                                       f"each ended by a lock conflict or a node not ready ({cause}); nothing "
                                       f"of it was written, try again") from exc
                log.info("transaction conflict on %s, running it again (%s)", self.describe(), cause)
                await asyncio.sleep(retry_pause(attempt))

    async def _rollback_quietly(self, sor: Any) -> None:
        # the original error is what the caller must see; a failed rollback only
        # means the connection is gone, and the pool discards it
        try:
            await sqlor_adapter.rollback(sor)
        except Exception:
            log.warning("rollback failed on %s", self.describe(), exc_info=True)

    async def create_missing_tables(self, include_reference: bool = False) -> list[str]:
        """Create the module's tables (and indexes) that do not exist yet. Never drops."""
        tables = schema.OWNED_TABLES + (schema.REFERENCE_TABLES if include_reference else ())
        async with self.connector.session() as sor:
            with warnings.catch_warnings():
                # MySQL reports every CREATE TABLE IF NOT EXISTS that found the table as a warning
                warnings.filterwarnings("ignore", message=r".*already exists")
                await self._create(sor, tables)
            await sqlor_adapter.commit(sor)
        return list(tables)

    async def _create(self, sor: Any, tables: Sequence[str]) -> None:
        for table in tables:
            await sqlor_adapter.run(sor, schema.create_table_statement(table, self.dialect), {})
            await sqlor_adapter.run(sor, schema.COLUMNS[self.dialect], {"table": table})
            columns = await sqlor_adapter.fetch_rows(sor)
            for ddl in schema.add_column_statements(table, self.dialect, columns):  # a table of an older version
                log.warning("%s: %s", self.describe(), ddl)
                await sqlor_adapter.run(sor, ddl, {})
            await self._create_indexes(sor, table)  # after the columns: an index may be on a column just added
            if self.dialect == "mysql":  # tables made before ids compared exactly (or by json2ddl)
                upgrade = schema.upgrade_statement(table, columns)
                if upgrade is not None:
                    log.warning("%s: giving the id columns of %s a binary collation", self.describe(), table)
                    await sqlor_adapter.run(sor, upgrade, {})

    async def _create_indexes(self, sor: Any, table: str) -> None:
        """Create the table's indexes that do not exist.  SQLite: ``CREATE INDEX IF NOT EXISTS``.
        MySQL: that is MariaDB syntax, MySQL 8 refuses it; so an index is created only if
        information_schema does not list it, and one another process made meanwhile (the
        CREATE failed, and now it is listed) is not an error."""
        indexes = schema.index_statements(table, self.dialect)
        present = await self._mysql_indexes(sor, table) if self.dialect == "mysql" else set()
        for name, ddl in indexes.items():
            if name in present:
                continue
            try:
                await sqlor_adapter.run(sor, ddl, {})
            except Exception:
                if self.dialect != "mysql" or name not in await self._mysql_indexes(sor, table):
                    raise

    async def _mysql_indexes(self, sor: Any, table: str) -> set[str]:
        await sqlor_adapter.run(sor, schema.MYSQL_INDEXES, {"table": table})
        return {row["name"].lower() for row in await sqlor_adapter.fetch_rows(sor)}  # names ignore case there
