"""Finding the database the ecosystem's way: the host's config.json + get_module_dbname().

ahserver calls the host's init function *before* it builds ``DBPools(config.databases)``,
and DBPools is a first-call-wins singleton: we never call ``DBPools()`` ourselves
(that would freeze an empty configuration); we read its databases if the host has
built it, else the host's ``config.json`` directly.
"""
import binascii

from ahserver.serverenv import ServerEnv
from appPublic.aes import aes_decode_b64
from appPublic.jsonConfig import getConfig
from sqlor.dbpools import DBPools

from ..exceptions import ConfigurationError

MODULE = "pipeline_service"
EMBEDDED_DEFAULT = "sqlite:///pipeline_service.db"


MYSQL_DRIVERS = ("mysql", "aiomysql", "tidb")  # hosts spell it either way


def host_config():
    try:
        return getConfig()
    except Exception as exc:  # no conf/config.json where the host runs
        raise ConfigurationError(f"cannot read the host's conf/config.json: {exc}") from exc


def host_databases():
    if DBPools.instance is not None and DBPools.instance.databases:
        return DBPools.instance.databases
    return host_config().databases or {}


def host_options():
    """The module's options from config.json ``pipeline_service`` (a JSON object; may be absent)."""
    options = host_config().get(MODULE) or {}
    if not isinstance(options, dict):
        raise ConfigurationError(f"config.json {MODULE!r} must be an object of options, got {options!r}")
    return dict(options)


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
    if desc.get("driver") in MYSQL_DRIVERS:
        kwargs = dict(desc.get("kwargs") or {})
        if kwargs.get("password"):
            kwargs["password"] = decrypt_password(kwargs["password"], dbname)
        desc = {"driver": "mysql", "kwargs": kwargs}
    return desc


def decrypt_password(encoded, dbname):
    """The plaintext of a config.json database password, decrypted exactly once.

    Ecosystem hosts keep it AES-encoded (``appPublic.aes.aes_encode_b64``) with
    config.json ``password_key``, as sqlor expects; the plaintext goes to the driver
    and nowhere else (sqlor is never given a password, see sqlor_adapter.new_sqlor).
    """
    key = host_config().password_key
    if not key:
        raise ConfigurationError(
            f"config.json 'databases.{dbname}.kwargs.password' is set but config.json has no 'password_key': "
            "ecosystem hosts keep the password AES-encoded with that key (appPublic.aes.aes_encode_b64(key, "
            "password)); add the key")
    try:
        return aes_decode_b64(key, encoded)
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ConfigurationError(
            f"config.json 'databases.{dbname}.kwargs.password' cannot be decrypted with 'password_key' ({exc}): "
            "store appPublic.aes.aes_encode_b64(password_key, <the password>) there") from None
