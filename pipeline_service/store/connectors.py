"""One connector per database, behind one small interface.

A connector opens and closes the connection resources of one database and lends
a sqlor dialect object bound to a live connection for one transaction
(``session()``).  It also translates its driver's errors into the package's
exceptions, so that nothing above it has to know a driver.
"""
import asyncio
import fcntl
import os
import sqlite3
from contextlib import asynccontextmanager

import aiomysql
import pymysql

from . import queries, sqlor_adapter
from ..exceptions import DatabaseUnavailableError, SchemaMissingError, StorageError

SCHEMA_HINT = ("create the schema with `python -m pipeline_service create-schema --with-reference --db ...` "
               "or `await storage.create_missing_tables(include_reference=True)`")

# MySQL client/server error codes that mean "the server is not there (any more)".
MYSQL_UNREACHABLE = {2003, 2005, 2006, 2013, 2055}
MYSQL_NO_TABLE = 1146
MYSQL_DEADLOCK = {1205, 1213}  # lock wait timeout, deadlock: the transaction may simply be run again
# a write the server refuses for its size or text (the package's input checks keep these out;
# a host's smaller max_allowed_packet can still meet one)
MYSQL_REFUSED_WRITE = {1153: "larger than the server's max_allowed_packet", 1406: "too long for its column",
                       1366: "text the column cannot store"}


class MySQLConnector:
    """MariaDB/MySQL over an aiomysql pool; statements run through sqlor's ``mysql`` dialect."""

    dialect = "mysql"

    def __init__(self, host="127.0.0.1", port=3306, user="root", password="", db=None,
                 minsize=1, maxsize=20, connect_timeout=5.0, **extra):
        if not db:
            raise StorageError("a MySQL database description needs 'db' (the database name)")
        text = str(port) if isinstance(port, (int, str)) and not isinstance(port, bool) else ""
        if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
            raise StorageError(f"the MySQL port must be a whole number from 1 to 65535, got {port!r:.40}")
        self.kwargs = dict(host=host, port=int(port), user=user, password=password, db=db, **extra)
        self.minsize, self.maxsize = minsize, maxsize
        self.connect_timeout = float(connect_timeout)
        self._pool = None
        self._opening = asyncio.Lock()
        self._reader = None            # one autocommit connection for probes
        self._reading = asyncio.Lock()
        self.max_packet = None         # the server's max_allowed_packet, read at open

    def describe(self):
        return f"MySQL database {self.kwargs['db']!r} at {self.kwargs['host']}:{self.kwargs['port']}"

    async def open(self):
        async with self._opening:
            if self._pool is not None:
                return
            self._pool = await self._reach(aiomysql.create_pool(
                minsize=self.minsize, maxsize=self.maxsize, autocommit=False, charset="utf8mb4",
                # every read sees the latest committed rows (see store/queries.sql, its head)
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                connect_timeout=self.connect_timeout, **self.kwargs))
            self.max_packet = await self._max_packet()

    async def _max_packet(self):
        """The server's max_allowed_packet: what one write may carry at most (engine/writes.py checks
        an artifact against it, so an oversized one is refused by name, not by a dropped connection)."""
        conn = await self._reach(self._pool.acquire())
        try:
            async with conn.cursor() as cur:
                await cur.execute(queries.statement("max_allowed_packet", self.dialect))
                row = await cur.fetchone()
            await conn.commit()
        finally:
            self._pool.release(conn)
        return int(row[0]) if row and row[0] else None

    async def _reach(self, connecting):
        """Await a connection attempt within the connect timeout; failing, name the server."""
        try:
            return await asyncio.wait_for(connecting, timeout=self.connect_timeout + 1)
        except (OSError, asyncio.TimeoutError, pymysql.err.MySQLError) as exc:
            raise DatabaseUnavailableError(f"cannot connect to {self.describe()}: {exc}") from exc

    def _sqlor_for(self, conn):
        """The sqlor dialect object that lives with a connection (made once per connection)."""
        sor = getattr(conn, "_pipeline_sqlor", None)
        if sor is None:
            sor = conn._pipeline_sqlor = sqlor_adapter.new_sqlor(sqlor_adapter.MYSQL_DRIVER, self.kwargs)
        return sor

    async def close(self):
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    @asynccontextmanager
    async def session(self):
        if self._pool is None:
            await self.open()
        conn = await self._reach(self._pool.acquire())
        try:  # every path releases what it acquired: a leak would starve the pool
            async with self._bound(conn) as sor:
                yield sor
        finally:
            # aiomysql closes (does not reuse) a connection still inside a transaction
            self._pool.release(conn)

    @asynccontextmanager
    async def _bound(self, conn):
        """The connection's sqlor, bound to it for one use and unbound on every path."""
        sor = self._sqlor_for(conn)
        await sqlor_adapter.bind(sor, conn)
        try:
            yield sor
        finally:
            await sqlor_adapter.unbind(sor)

    @asynccontextmanager
    async def read_session(self):
        """A sqlor bound to a dedicated autocommit connection: reads without a COMMIT."""
        async with self._reading:
            if self._reader is None or self._reader.closed:
                self._reader = await self._reach(aiomysql.connect(
                    autocommit=True, charset="utf8mb4", connect_timeout=self.connect_timeout, **self.kwargs))
            conn = self._reader
            try:
                async with self._bound(conn) as sor:
                    yield sor
            except BaseException:
                self._reader = None  # a failed connection is not reused
                conn.close()
                raise

    def retryable(self, exc):
        return isinstance(exc, pymysql.err.MySQLError) and bool(exc.args) and exc.args[0] in MYSQL_DEADLOCK

    def translate_error(self, exc):
        """The package exception for a driver error, or None to re-raise it as is."""
        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            code = exc.args[0]
            if code == MYSQL_NO_TABLE:
                return SchemaMissingError(f"{exc.args[1]} in {self.describe()}: {SCHEMA_HINT}")
            if code in MYSQL_UNREACHABLE:
                return DatabaseUnavailableError(f"lost {self.describe()}: {exc}")
            if code in MYSQL_REFUSED_WRITE:
                return StorageError(f"{self.describe()} refused a write {MYSQL_REFUSED_WRITE[code]}: {exc}")
        return None


class SQLiteConnector:
    """The embedded default: one aiosqlite connection, transactions taken in turn.

    SQLite has a single writer anyway; one connection guarded by a lock gives
    each transaction the whole database without "database is locked" retries.
    """

    dialect = "sqlite"
    max_packet = None  # no limit on one statement short of SQLite's own (1 GB)

    def __init__(self, path="pipeline_service.db", **_ignored):
        self.path = str(path)
        self._sor = None
        self._lock = asyncio.Lock()
        self._owner_file = None

    def _take_ownership(self):
        """SQLite is the single-process default: a second process on the same file is refused."""
        owner_file = open(self.path + ".owner", "a+")
        try:
            fcntl.flock(owner_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner_file.seek(0)
            holder = owner_file.read().strip() or "?"
            owner_file.close()
            raise StorageError(f"{self.describe()} is in use by another process (pid {holder}); SQLite is the "
                               "single-process embedded default: use MySQL/MariaDB to run several processes")
        owner_file.seek(0)
        owner_file.truncate()
        owner_file.write(str(os.getpid()))
        owner_file.flush()
        self._owner_file = owner_file

    def describe(self):
        return f"SQLite database {self.path!r}"

    async def open(self):
        if self._sor is not None:
            return
        sor = sqlor_adapter.new_sqlor(sqlor_adapter.SQLITE_DRIVER, {"path": self.path})
        try:
            if self._owner_file is None:
                self._take_ownership()
            await sor.connect()
            await sor.conn.execute("PRAGMA journal_mode=WAL")
            await sor.conn.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailableError(f"cannot open {self.describe()}: {exc}") from exc
        self._sor = sor

    async def close(self):
        sor, self._sor = self._sor, None
        if sor is not None:
            await sor.close()
        owner_file, self._owner_file = self._owner_file, None
        if owner_file is not None:
            owner_file.close()  # releases the lock

    @asynccontextmanager
    async def session(self):
        async with self._lock:
            if self._sor is None:
                await self.open()
            sor = self._sor
            try:
                await sqlor_adapter.bind(sor, sor.conn)
                yield sor
            finally:
                await sqlor_adapter.unbind(sor)

    read_session = session  # one connection: reads take their turn like everything else

    def retryable(self, exc):
        return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)

    def translate_error(self, exc):
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return SchemaMissingError(f"{exc} in {self.describe()}: {SCHEMA_HINT}")
        if isinstance(exc, sqlite3.OperationalError):  # disk full, I/O error, read-only file, still locked
            return StorageError(f"{self.describe()} could not be written or read: {exc}")
        return None


def connector_for(description):
    """Build a connector from a database description.

    Accepted forms: the ecosystem's ``{"driver": "mysql", "kwargs": {...}}``,
    ``{"driver": "sqlite", "kwargs": {"path": ...}}``, or a URL string
    ``mysql://user:password@host:port/db`` / ``sqlite:///path/to/file.db``.
    """
    if isinstance(description, str):
        description = parse_url(description)
    if not isinstance(description, dict):
        raise StorageError(f"a database description is a dict or a URL, not {type(description).__name__}")
    driver = description.get("driver")
    kwargs = dict(description.get("kwargs") or {})
    if driver in ("mysql", "aiomysql", "tidb"):
        return MySQLConnector(**kwargs)
    if driver in ("sqlite", "sqlite3", "aiosqlite", sqlor_adapter.SQLITE_DRIVER):
        if "path" not in kwargs and "dbname" in kwargs:
            kwargs["path"] = kwargs.pop("dbname")
        return SQLiteConnector(**kwargs)
    raise StorageError(f"unsupported database driver {driver!r}: use 'mysql' or 'sqlite'")


def parse_url(url):
    from urllib.parse import urlsplit, unquote
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise StorageError(f"a database URL that cannot be parsed: {exc}") from None
    if parts.scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise StorageError(f"a SQLite URL is sqlite:///relative.db or sqlite:////abs/path.db, not {url!r}")
        return {"driver": "sqlite", "kwargs": {"path": url[len("sqlite:///"):]}}
    if parts.scheme in ("mysql", "mariadb"):
        try:
            port = parts.port or 3306
        except ValueError as exc:  # not a number, or outside 0-65535 (the URL may hold a password: not shown)
            raise StorageError(f"the database URL for host {parts.hostname!r} has no valid port: {exc}") from None
        kwargs = {"host": parts.hostname or "127.0.0.1", "port": port,
                  "user": unquote(parts.username or "root"), "password": unquote(parts.password or ""),
                  "db": parts.path.lstrip("/")}
        return {"driver": "mysql", "kwargs": kwargs}
    raise StorageError(f"unsupported database URL {url!r}: use mysql://user:pw@host:port/db or sqlite:///path")
