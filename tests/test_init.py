"""Host integration in-process: load_pipeline_service() and finding the host's database."""
import pytest
from ahserver.serverenv import ServerEnv

from pipeline_service import ConfigurationError, api
from pipeline_service.host import config as hostcfg
from pipeline_service.init import FUNCTIONS, load_pipeline_service


@pytest.fixture
def clean_env():
    env = ServerEnv()
    saved = dict(env)
    yield env
    for key in list(env):
        if key not in saved:
            del env[key]
    env.update(saved)
    api._hosted = False


def test_load_registers_the_nineteen_functions_and_twice_is_harmless(clean_env):
    load_pipeline_service()
    first = {name: clean_env[name] for name in FUNCTIONS}
    load_pipeline_service()
    assert len(FUNCTIONS) == 19
    assert clean_env.pipeline_purge is api.pipeline_purge and clean_env.pipeline_signal is api.pipeline_signal
    assert {name: clean_env[name] for name in FUNCTIONS} == first
    assert clean_env.pipeline_register_handler is api.pipeline_register_handler
    assert clean_env.pipeline_on is api.pipeline_on and clean_env.pipeline_off is api.pipeline_off
    assert callable(clean_env.pipeline_endpoint)
    from ahserver import configuredServer
    from pipeline_service.init import engine_lifecycle
    assert configuredServer.cleanupctx_coros.count(engine_lifecycle) == 1  # started/stopped with the server


def test_a_host_without_get_module_dbname_is_told_what_is_missing(clean_env):
    load_pipeline_service()
    with pytest.raises(ConfigurationError, match="get_module_dbname"):
        api.configure()


def test_a_database_name_missing_from_config_is_reported(clean_env, monkeypatch):
    clean_env.get_module_dbname = lambda module: "nowhere"
    monkeypatch.setattr(hostcfg, "host_databases", lambda: {"other": {"driver": "mysql", "kwargs": {}}})
    with pytest.raises(ConfigurationError, match="no entry 'nowhere'"):
        hostcfg.host_database(required=True)


def host_config(monkeypatch, **config):
    from appPublic.dictObject import DictObject
    monkeypatch.setattr(hostcfg, "host_config", lambda: DictObject(**config))


def test_the_host_entry_is_used_with_its_password_decrypted_once(clean_env, monkeypatch):
    from appPublic.aes import aes_encode_b64
    clean_env.get_module_dbname = lambda module: "pipe" if module == "pipeline_service" else None
    databases = {"pipe": {"driver": "aiomysql", "kwargs": {"host": "db", "port": 3306, "user": "u", "db": "d",
                                                           "password": aes_encode_b64("k", "pw")}}}
    host_config(monkeypatch, password_key="k", databases=databases)
    desc = hostcfg.host_database(required=True)
    assert desc == {"driver": "mysql", "kwargs": {"host": "db", "port": 3306, "user": "u", "db": "d",
                                                  "password": "pw"}}


@pytest.mark.parametrize("config, message", [
    ({"password_key": "k"}, "cannot be decrypted with 'password_key'"),
    ({}, "has no 'password_key'"),
])
def test_a_password_that_cannot_be_decrypted_is_a_clear_configuration_error(clean_env, monkeypatch, config,
                                                                             message):
    clean_env.get_module_dbname = lambda module: "pipe"
    databases = {"pipe": {"driver": "mysql", "kwargs": {"db": "d", "user": "u", "password": "not-encoded"}}}
    host_config(monkeypatch, databases=databases, **config)
    with pytest.raises(ConfigurationError, match=message):
        hostcfg.host_database(required=True)


def test_without_a_host_the_embedded_sqlite_default_is_used(clean_env):
    service = api.configure()
    assert service.storage.dialect == "sqlite" and "pipeline_service.db" in service.storage.describe()
    api._service = None


@pytest.mark.parametrize("timeout", [-1, 3601, float("nan"), "30", True])
def test_a_bad_stop_timeout_is_a_configuration_error_and_changes_nothing(clean_env, tmp_path, timeout):
    before = (api._service, api.stop_timeout())
    with pytest.raises(ConfigurationError, match="stop_timeout must be a number of seconds"):
        api.configure(f"sqlite:///{tmp_path / 'x.db'}", stop_timeout=timeout)
    assert (api._service, api.stop_timeout()) == before


def test_package_records_reach_the_host_log_file_with_their_origin_and_traceback(tmp_path):
    import logging
    from appPublic.log import MyLogger
    from pipeline_service.host.log import HostLogHandler
    logfile = tmp_path / "host.log"
    host_logger = MyLogger.klass("the-host", levelname="error", logfile=str(logfile))  # as config.json 'logger'
    logger = logging.getLogger("pipeline_service.test_hostlog")
    handler = HostLogHandler(host_logger)
    logger.addHandler(handler)
    try:
        logger.info("below the host's level")
        try:
            raise ValueError("the detail behind an internal error")
        except ValueError:
            logger.exception("endpoint %r failed", "submit")
    finally:
        logger.removeHandler(handler)
    text = logfile.read_text()
    assert "below the host's level" not in text
    assert "[the-host][error][" in text and "test_init.py:" in text  # the record's true origin
    assert "endpoint 'submit' failed" in text and "ValueError: the detail behind an internal error" in text
