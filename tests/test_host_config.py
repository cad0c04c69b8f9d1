"""Reaching MariaDB the way real hosts do: a non-root user with a password, given as a
URL or as a host's config.json entry (AES-encoded password, driver spelled 'aiomysql');
and a connector that never leaks a pooled connection."""
import asyncio

import pytest
from ahserver.serverenv import ServerEnv
from appPublic.aes import aes_encode_b64
from appPublic.dictObject import DictObject

from pipeline_service import PipelineService, api
from pipeline_service.host import config as host_config
from pipeline_service.store import sqlor_adapter
from pipeline_service.store.storage import Storage
from conftest import mysql_parts, mysql_user, scratch_name

USER, PASSWORD = "pipeline_host", "s3cret: pa$$ w@rd/?"
DB = scratch_name("users")


@pytest.fixture(scope="module")
def host_user():
    mysql_user(USER, PASSWORD, DB)
    return mysql_parts()


@pytest.fixture
def no_conf_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no conf/config.json here: a standalone process


async def test_a_url_with_a_password_reaches_mariadb_without_any_config_json(host_user, no_conf_dir):
    from urllib.parse import quote
    url = f"mysql://{USER}:{quote(PASSWORD, safe='')}@{host_user['host']}:{host_user['port']}/{DB}"
    service = PipelineService(url, create_schema=True, autostart=False)
    try:
        assert (await service.list("t1"))["total"] == 0
    finally:
        await service.stop()


@pytest.fixture
def hosted(monkeypatch, host_user):
    """A host whose config.json keeps the password AES-encoded with password_key."""
    env = ServerEnv()
    saved = dict(env)
    env.get_module_dbname = lambda module: "pipe"
    kwargs = {"host": host_user["host"], "port": host_user["port"], "user": USER, "db": DB,
              "password": aes_encode_b64("the host's key", PASSWORD)}
    config = DictObject(password_key="the host's key", databases={"pipe": {"driver": "aiomysql", "kwargs": kwargs}})
    monkeypatch.setattr(host_config, "host_config", lambda: config)
    api.use_host_configuration()
    yield
    api._hosted = False
    for key in list(env):
        if key not in saved:
            del env[key]


async def test_a_host_with_an_encrypted_password_and_driver_aiomysql_works(hosted, no_conf_dir):
    service = api.configure(create_schema=True, autostart=False)
    try:
        assert (await api.pipeline_list("t1"))["total"] == 0
        assert service.storage.dialect == "mysql"
    finally:
        await api.shutdown()


@pytest.mark.parametrize("failing", ["new_sqlor", "bind"])
async def test_a_failing_session_never_leaks_a_connection(mysql_schema, monkeypatch, failing):
    """Binding a pooled connection fails 100 times (fault injection at the two steps
    between acquire and use): the pool stays whole and closing stays prompt."""
    storage = Storage.from_description(mysql_schema)
    await storage.open()
    real, failures = getattr(sqlor_adapter, failing), 100

    def fail(*args):
        raise RuntimeError("binding failed")

    async def fail_async(*args):
        fail()
    monkeypatch.setattr(sqlor_adapter, failing, fail if failing == "new_sqlor" else fail_async)

    async def read(tx):
        return await tx.fetch_all("probe", now=0, step_types=[])
    for _ in range(failures):  # far more than the pool's 20 connections
        with pytest.raises(RuntimeError, match="binding failed"):
            await asyncio.wait_for(storage.atomic(read), timeout=5)
    monkeypatch.setattr(sqlor_adapter, failing, real)
    pool = storage.connector._pool
    assert pool.freesize == pool.size  # every connection is back
    assert (await asyncio.wait_for(storage.atomic(read), timeout=5))[0].keys() == {"runnable", "next_ready", "next_expiry",
                                                                                  "next_due", "next_tick"}
    await asyncio.wait_for(storage.close(), timeout=5)  # and closing is prompt
