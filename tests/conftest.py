"""Shared fixtures: a real MariaDB (the host's code path) and SQLite (the embedded default).

MariaDB is found at $PIPELINE_TEST_MYSQL (default mysql://root@127.0.0.1:3306/pipeline_test_<pid>:
a database of this session's own, created by the session and dropped with its scratch
databases at its end, so two runs on one MariaDB never drop each other's databases).
Outside CI a missing MariaDB skips the MySQL variants; with CI=true it fails them.
"""
import asyncio
import os
import socket
import time
from urllib.parse import urlsplit

import pymysql
import pytest

from pipeline_service.ids import new_id
from pipeline_service.store.storage import Storage

# an explicit $PIPELINE_TEST_MYSQL is kept after the session (to be looked at); our own name is not
OWN_DATABASE = "PIPELINE_TEST_MYSQL" not in os.environ
MYSQL_URL = os.environ.get("PIPELINE_TEST_MYSQL", f"mysql://root@127.0.0.1:3306/pipeline_test_{os.getpid()}")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def mysql_parts(url=MYSQL_URL):
    p = urlsplit(url)
    return dict(host=p.hostname, port=p.port or 3306, user=p.username or "root",
                password=p.password or "", db=p.path.lstrip("/"))


def mysql_admin(**kw):
    parts = mysql_parts()
    parts.pop("db")
    parts.update(kw)
    return pymysql.connect(connect_timeout=3, autocommit=True, **parts)


def mysql_available():
    parts = mysql_parts()
    try:
        with socket.create_connection((parts["host"], parts["port"]), timeout=2):
            pass
        mysql_admin().close()
        return True
    except (OSError, pymysql.err.MySQLError):
        return False


def require_mysql():
    if not mysql_available():
        message = f"MariaDB is not reachable at {MYSQL_URL}"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing MariaDB is a failure)")
        pytest.skip(message)


def scratch_name(suffix):
    """A scratch database name of this test session's own: derived from the main test
    database's name, so two runs on one MariaDB (different $PIPELINE_TEST_MYSQL) never
    drop each other's databases."""
    return f"{mysql_parts()['db']}_{suffix}"


def scratch_mysql_database(name):
    """Create (or empty) a MySQL database for one test module and return its URL."""
    require_mysql()
    conn = mysql_admin()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    parts = mysql_parts()
    return f"mysql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}/{name}"


def mysql_user(user, password, db):
    """A non-root MariaDB user (as a real host has) with every right on database ``db``."""
    require_mysql()
    conn = mysql_admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        for host in ("localhost", "127.0.0.1"):
            cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
            cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
            cur.execute(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@%s", (user, host))
    conn.close()


def pytest_sessionfinish(session):
    """Drop this session's own database, its scratch databases and the users named after them
    (only when the session chose the name: an explicit $PIPELINE_TEST_MYSQL is left alone)."""
    if OWN_DATABASE and mysql_available():
        drop_session_databases()


def drop_session_databases():
    main = mysql_parts()["db"]
    conn = mysql_admin()
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        for (name,) in cur.fetchall():
            if name == main or name.startswith(main + "_"):
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute("SELECT user, host FROM mysql.user")
        for user, host in cur.fetchall():
            if user.startswith(main + "_"):
                cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
    conn.close()


@pytest.fixture(scope="session")
def mysql_url():
    require_mysql()
    parts = mysql_parts()
    conn = mysql_admin()
    with conn.cursor() as cur:  # a fresh schema for every test session
        cur.execute(f"DROP DATABASE IF EXISTS {parts['db']}")
        cur.execute(f"CREATE DATABASE {parts['db']} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    return MYSQL_URL


@pytest.fixture(scope="session")
def mysql_schema(mysql_url):
    async def create():
        storage = Storage.from_description(mysql_url)
        await storage.create_missing_tables(include_reference=True)
        await storage.close()
    asyncio.run(create())
    return mysql_url


async def until(condition, timeout=10.0, what="the condition", interval=0.01):
    """Wait until ``condition()`` (a function, or a coroutine function) is true; return its value.
    Tests wait on conditions, never assert after a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(interval)


class Polls:
    """Counts the polls of ``service``'s executor loop (its ``probe`` statement).  A test that
    proves something does not happen waits for polls — each a chance for it to happen — not
    for a fixed time."""

    def __init__(self, service):
        self.runnable = []  # per poll: did it see a step this process could claim?
        probe = service.storage.probe

        async def counted(name, /, **params):
            rows = await probe(name, **params)
            if name == "probe":
                self.runnable.append(bool(rows[0]["runnable"]))
            return rows
        service.storage.probe = counted

    async def more(self, count, runnable=False, timeout=10.0):
        """Wait for ``count`` more polls (only those that saw a claimable step, if ``runnable``)."""
        start = len(self.runnable)
        await until(lambda: (self.runnable[start:].count(True) if runnable else len(self.runnable) - start) >= count,
                    timeout, f"{count} more polls" + (" that see a claimable step" if runnable else ""))


@pytest.fixture(params=["mysql", "sqlite"])
def backend(request):
    return request.param


@pytest.fixture
def database(backend, tmp_path, request):
    """A database description for the backend under test, schema created."""
    if backend == "mysql":
        return request.getfixturevalue("mysql_schema")
    return f"sqlite:///{tmp_path / 'pipeline.db'}"


@pytest.fixture
async def storage(database):
    st = Storage.from_description(database)
    await st.create_missing_tables(include_reference=True)
    yield st
    await st.close()


@pytest.fixture
def tenant():
    """A tenant id of its own for each test, so tests never see each other's rows."""
    return "t-" + new_id()[:12]


@pytest.fixture
async def service(database):
    """A PipelineService on the backend under test, its executor running; a test registers
    its handlers on it (``service.register_handler``): its registry starts empty."""
    from pipeline_service import PipelineService
    svc = PipelineService(database, poll_interval=0.2, concurrency=64)
    await svc.storage.create_missing_tables(include_reference=True)
    await svc.start()
    yield svc
    await svc.stop(timeout=5)


@pytest.fixture
async def stepper(database):
    """A PipelineService on the backend under test whose engine the test steps by hand
    (``await stepper.executor.run_once()``): no loop runs, nothing depends on timing."""
    from pipeline_service import PipelineService
    svc = PipelineService(database, concurrency=64, autostart=False)
    await svc.storage.create_missing_tables(include_reference=True)
    yield svc
    await svc.stop(timeout=5)


@pytest.fixture
async def make_service():
    """Builds PipelineServices (PipelineService's arguments) that are stopped after the test,
    whatever happens in it: a failed assertion never leaves an executor running into the next test."""
    from pipeline_service import PipelineService
    made = []

    def make(*args, **kwargs):
        made.append(PipelineService(*args, **kwargs))
        return made[-1]
    yield make
    for svc in reversed(made):  # stopping a stopped service does nothing
        await svc.stop(timeout=5)


@pytest.fixture
def pipeline_id():
    return "p-" + new_id()[:12]


@pytest.fixture
def step_type():
    """A step-type prefix unique to the test: the MariaDB database is shared by the whole session,
    so a step left ready by an earlier test is never one this test's service can run."""
    return "st-" + new_id()[:8]
