"""Finding the database the ecosystem's way: the host's config.json + get_module_dbname().

ahserver calls the host's init function *before* it builds ``DBPools(config.databases)``,
and DBPools is a first-call-wins singleton: we never call ``DBPools()`` ourselves
(that would freeze an empty configuration); we read its databases if the host has
built it, else the host's ``config.json`` directly.
"""
from ahserver.serverenv import ServerEnv
from appPublic.jsonConfig import getConfig
from sqlor.dbpools import DBPools

from . import sqlor_adapter
from .exceptions import ConfigurationError

MODULE = "pipeline_service"
EMBEDDED_DEFAULT = "sqlite:///pipeline_service.db"


def host_databases():
    if DBPools.instance is not None and DBPools.instance.databases:
        return DBPools.instance.databases
    try:
        return getConfig().databases or {}
    except Exception as exc:  # no conf/config.json where the host runs
        raise ConfigurationError(f"cannot read the host's conf/config.json: {exc}") from exc


def host_database(required=False):
    """The host's database description for this module, or None if there is no host.

    ``required``: the module was loaded into a host, so a missing configuration is an
    error (not a reason to fall back to the embedded SQLite file)."""
    get_module_dbname = ServerEnv().get("get_module_dbname")
    if get_module_dbname is None:
        if required:
            raise ConfigurationError(
                "the host has not defined get_module_dbname: in its init function set "
                "ServerEnv().get_module_dbname = a function returning the config.json 'databases' key "
                f"for module {MODULE!r}")
        return None
    dbname = get_module_dbname(MODULE)
    if not dbname:
        raise ConfigurationError(f"the host's get_module_dbname({MODULE!r}) returned {dbname!r}: "
                                 "map the module to an entry of config.json 'databases'")
    databases = host_databases()
    desc = databases.get(dbname)
    if not desc:
        raise ConfigurationError(f"config.json 'databases' has no entry {dbname!r} (named by get_module_dbname"
                                 f"({MODULE!r})); add one with driver 'mysql' and kwargs host/port/user/password/db")
    desc = dict(desc)
    if desc.get("driver") in ("mysql", "aiomysql", "tidb"):
        desc = {"driver": "mysql", "kwargs": sqlor_adapter.decrypted_kwargs(dict(desc.get("kwargs") or {}))}
    return desc
