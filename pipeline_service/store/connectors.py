"""One connector per database, behind one small interface.

A connector opens and closes the connection resources of one database and lends
a sqlor dialect object bound to a live connection for one transaction
(``session()``).  It also translates its driver's errors into the package's
exceptions, so that nothing above it has to know a driver.
"""
import asyncio
import fcntl
import logging
import os
import sqlite3
import weakref
from contextlib import asynccontextmanager

import aiomysql
import pymysql

from . import queries, sqlor_adapter
from ..exceptions import DatabaseUnavailableError, DuplicateKeyError, SchemaMissingError, StorageError

log = logging.getLogger(__name__)

SCHEMA_HINT = ("create the schema with `python -m pipeline_service create-schema --with-reference --db ...` "
               "or `await storage.create_missing_tables(include_reference=True)`")

# MySQL client/server error codes that mean "the server is not there (any more)"; 1047 is a
# Galera node that is not part of the primary component (joining, or cut off): it refuses work
MYSQL_UNREACHABLE = {2003, 2005, 2006, 2013, 2055, 1047}
MYSQL_NO_TABLE = 1146
MYSQL_DUPLICATE_KEY = 1062  # a unique key refused the row: the engine reads the row holding it
# lock wait timeout, deadlock — and Galera's certification conflict, which is reported as a
# deadlock at COMMIT: the transaction may simply be run again (docs/OPERATIONS.md, "Galera")
MYSQL_DEADLOCK = {1205, 1213}
MYSQL_NOT_READY = 1047  # a Galera node outside the primary component: worth another try (or another node)
# a write the server refuses for its size or text (the package's input checks keep these out;
# a host's smaller max_allowed_packet can still meet one)
MYSQL_REFUSED_WRITE = {1153: "larger than the server's max_allowed_packet", 1406: "too long for its column",
                       1366: "text the column cannot store",
                       1644: "as a trigger of the database's own said (SIGNAL)"}


def mysql_addresses(host: object, port: object) -> list[tuple[str, int]]:
    """The servers a MySQL description names: ``host`` is one host, or several (a list, or one
    string separated by commas) for a Galera cluster; each may carry its own ``:port``, else
    ``port`` is used."""
    if isinstance(host, str):
        entries = [h.strip() for h in host.split(",")]
    elif isinstance(host, (list, tuple)) and all(isinstance(h, str) for h in host):
        entries = [h.strip() for h in host]
    else:
        raise StorageError(f"the MySQL host is a name or a list of names, got {type(host).__name__}")
    if not entries or not all(entries):
        raise StorageError(f"the MySQL host names an empty server: {host!r:.80}")
    addresses = []
    for entry in entries:
        name, own_port = entry, port
        if entry.startswith("["):  # [IPv6 address] or [IPv6 address]:port
            name, _, rest = entry[1:].partition("]")
            own_port = rest[1:] if rest.startswith(":") else port
        elif entry.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
            name, own_port = entry.split(":")
        addresses.append((name, mysql_port(own_port)))
    if len(set(addresses)) != len(addresses):
        raise StorageError(f"the MySQL hosts name a server twice: {host!r:.80}")
    return addresses


def mysql_port(port: object) -> int:
    text = str(port) if isinstance(port, (int, str)) and not isinstance(port, bool) else ""
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise StorageError(f"the MySQL port must be a whole number from 1 to 65535, got {port!r:.40}")
    return int(text)


class MySQLConnector:
    """MariaDB/MySQL over an aiomysql pool; statements run through sqlor's ``mysql`` dialect.

    Several addresses (a Galera cluster): transactions go to one server at a time; when it
    cannot be reached (or, a Galera node, refuses work) the connector moves to the next one
    in the list and stays there (docs/OPERATIONS.md, "Galera")."""

    dialect = "mysql"

    def __init__(self, host="127.0.0.1", port=3306, user="root", password="", db=None,
                 minsize=1, maxsize=20, connect_timeout=5.0, **extra):
        if not db:
            raise StorageError("a MySQL database description needs 'db' (the database name)")
        self.addresses = mysql_addresses(host, port)
        self.kwargs = dict(user=user, password=password, db=db, **extra)  # host, port: the current address's
        self.minsize, self.maxsize = minsize, maxsize
        self.connect_timeout = float(connect_timeout)
        self._current = 0              # index of the address transactions go to
        self._pool = None
        self._pool_address = 0         # the address the pool's connections reach
        self._retiring: set = set()    # pools of a server left behind, closing
        self._opening = asyncio.Lock()
        self._reader = None            # one autocommit connection for probes
        self._reader_address = 0
        self._reading = asyncio.Lock()
        self.max_packet = None         # the server's max_allowed_packet, read at open
        self.galera = False            # learnt at open: the server is a node of a Galera cluster
        self._sqlors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection: its sqlor

    @property
    def statements(self) -> str:
        """The variant of queries.sql's statements this server takes."""
        return "galera" if self.galera else "mysql"

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    def describe(self):
        host, port = self.addresses[self._current]
        where = f" (server {self._current + 1} of {len(self.addresses)})" if self.several else ""
        return f"MySQL database {self.kwargs['db']!r} at {host}:{port}{where}"

    def _connect_args(self, index):
        host, port = self.addresses[index]
        return dict(host=host, port=port, **self.kwargs)

    async def open(self):
        async with self._opening:
            if self._pool is not None:
                return
            failures = []
            for offset in range(len(self.addresses)):  # from the current server on, the first that answers
                index = (self._current + offset) % len(self.addresses)
                try:
                    self._pool = await self._reach(aiomysql.create_pool(
                        minsize=self.minsize, maxsize=self.maxsize, autocommit=False, charset="utf8mb4",
                        # every read sees the latest committed rows (see store/queries.sql, its head)
                        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                        connect_timeout=self.connect_timeout, **self._connect_args(index)), index)
                except DatabaseUnavailableError as exc:
                    failures.append(exc)
                    continue
                if index != self._current:
                    log.warning("moved to %s: the server before it cannot be reached", self._describe_at(index))
                self._current = self._pool_address = index
                self.galera = await self._is_galera(self._pool)
                self.max_packet = await self._max_packet(self._pool)
                return
            if not self.several:
                raise failures[0]
            raise DatabaseUnavailableError("cannot connect to any server of MySQL database "
                                           f"{self.kwargs['db']!r}: " + "; ".join(str(f) for f in failures))

    async def _max_packet(self, pool):
        """The server's max_allowed_packet: what one write may carry at most (engine/writes.py checks
        an artifact against it, so an oversized one is refused by name, not by a dropped connection)."""
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(queries.statement("max_allowed_packet", self.dialect))
                row = await cur.fetchone()
            await conn.rollback()
        return int(row[0]) if row and row[0] else None

    async def _is_galera(self, pool):
        """Is the server a Galera node (wsrep on)? Asked once per pool (MySQL 8 has no such variable)."""
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SHOW VARIABLES LIKE 'wsrep_on'")
                row = await cur.fetchone()
            await conn.rollback()
        return row is not None and str(row[1]).upper() == "ON"

    def _describe_at(self, index):
        host, port = self.addresses[index]
        return f"MySQL database {self.kwargs['db']!r} at {host}:{port}"

    async def _reach(self, connecting, index=None):
        """Await a connection attempt within the connect timeout; failing, name the server."""
        try:
            return await asyncio.wait_for(connecting, timeout=self.connect_timeout + 1)
        except (OSError, asyncio.TimeoutError, pymysql.err.MySQLError) as exc:
            where = self.describe() if index is None else self._describe_at(index)
            raise DatabaseUnavailableError(f"cannot connect to {where}: {exc}") from exc

    def _lost(self, index, exc):
        """The server at ``index`` failed ``exc``: with several servers, move on from it (once,
        however many sessions saw it fail) — the next session opens a pool on the next one."""
        if not self.several or index != self._current or not self._unreachable(exc):
            return
        self._current = (index + 1) % len(self.addresses)
        log.warning("%s failed (%s): moving to %s", self._describe_at(index), exc, self._describe_at(self._current))
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()  # free connections close now, those in use when they come back
            self._retiring.add(pool)

    def _unreachable(self, exc):
        if isinstance(exc, DatabaseUnavailableError):
            return True
        cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ is not None else exc
        return isinstance(cause, OSError) or (isinstance(cause, pymysql.err.MySQLError) and bool(cause.args)
                                              and cause.args[0] in MYSQL_UNREACHABLE)

    def _sqlor_for(self, conn):
        """The sqlor dialect object that lives with a connection (made once per connection)."""
        sor = self._sqlors.get(conn)
        if sor is None:
            sor = self._sqlors[conn] = sqlor_adapter.new_sqlor(sqlor_adapter.MYSQL_DRIVER, self.kwargs)
        return sor

    async def close(self):
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        pool, self._pool = self._pool, None
        pools = [*self._retiring, *([pool] if pool is not None else [])]
        self._retiring.clear()
        for each in pools:
            each.close()
        for each in pools:
            await each.wait_closed()

    @asynccontextmanager
    async def session(self):
        if self._pool is None:
            await self.open()
        pool, index = self._pool, self._pool_address
        try:
            conn = await self._reach(pool.acquire(), index)
        except DatabaseUnavailableError as exc:
            self._lost(index, exc)
            raise
        try:  # every path releases what it acquired: a leak would starve the pool
            async with self._bound(conn) as sor:
                yield sor
        except BaseException as exc:
            self._lost(index, exc)
            raise
        finally:
            # aiomysql closes (does not reuse) a connection still inside a transaction
            pool.release(conn)
            if pool in self._retiring and pool.size == pool.freesize:
                self._retiring.discard(pool)  # its last connection is back: closed

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
            if self._reader is not None and self._reader_address != self._current:
                self._reader.close()  # the transactions moved to another server: so do the reads
                self._reader = None
            if self._reader is None or self._reader.closed:
                index = self._reader_address = self._current
                try:
                    self._reader = await self._reach(aiomysql.connect(
                        autocommit=True, charset="utf8mb4", connect_timeout=self.connect_timeout,
                        **self._connect_args(index)), index)
                except DatabaseUnavailableError as exc:
                    self._lost(index, exc)
                    raise
            conn = self._reader
            try:
                async with self._bound(conn) as sor:
                    yield sor
            except BaseException as exc:
                self._reader = None  # a failed connection is not reused
                conn.close()
                self._lost(self._reader_address, exc)
                raise

    def retryable(self, exc):
        return isinstance(exc, pymysql.err.MySQLError) and bool(exc.args) and (
            exc.args[0] in MYSQL_DEADLOCK or exc.args[0] == MYSQL_NOT_READY)

    def translate_error(self, exc):
        """The package exception for a driver error, or None to re-raise it as is."""
        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            code = exc.args[0]
            if code == MYSQL_DUPLICATE_KEY:
                return DuplicateKeyError(f"{self.describe()}: {exc.args[1]}")
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

    dialect = statements = "sqlite"
    several = False  # one file: nothing to move to
    galera = False
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
        if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(exc):
            return DuplicateKeyError(f"{self.describe()}: {exc}")
        if isinstance(exc, sqlite3.IntegrityError):  # a constraint, or a trigger's RAISE(ABORT)
            return StorageError(f"{self.describe()} refused a write: {exc}")
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
        servers = parts.netloc.rpartition("@")[2]
        if "," in servers:  # several servers (a Galera cluster): mysql://user:pw@h1:3306,h2:3306/db
            host, port = servers, 3306  # mysql_addresses reads each one's port
        else:
            try:
                host, port = parts.hostname or "127.0.0.1", parts.port or 3306
            except ValueError as exc:  # not a number, or outside 0-65535 (the URL may hold a password: not shown)
                raise StorageError(f"the database URL for host {parts.hostname!r} has no valid port: {exc}") from None
        kwargs = {"host": host, "port": port,
                  "user": unquote(parts.username or "root"), "password": unquote(parts.password or ""),
                  "db": parts.path.lstrip("/")}
        return {"driver": "mysql", "kwargs": kwargs}
    raise StorageError(f"unsupported database URL {url!r}: use mysql://user:pw@host:port/db or sqlite:///path")
