"""Handler registries: each PipelineService owns one; the module-level functions feed the default service's."""
import asyncio

import pytest

import pipeline_service
from pipeline_service import ConfigurationError, HandlerError, InvalidInputError, PipelineService, api
from pipeline_service.engine.handlers import HandlerRegistry
from pipeline_service.steps import approval


@pytest.fixture
def built(make_service):
    """Builds a service with its schema; every one is stopped after the test, whatever happens in it."""
    async def build(database, **options):
        service = make_service(database, poll_interval=0.1, **options)
        await service.storage.create_missing_tables(include_reference=True)
        return service
    return build


def hosts(registry):
    """The step types of a registry whose handlers the host registered (the built-ins left out)."""
    return [t for t in registry.step_types() if not registry.builtin(t)]


def recording(calls, name):
    async def handler(tenant_id, task_id, step_name, input_data, config):
        calls.append((name, task_id))
        return {"by": name}
    return handler


async def test_two_services_in_one_process_never_run_each_others_step_types(built, database, tenant, pipeline_id,
                                                                             step_type):
    """A service claims only the step types registered on it, though both share the database."""
    calls = []
    runner = await built(database)
    runner.register_handler(step_type + "-a", recording(calls, "a"))
    # one Storage: SQLite admits one connection owner, and "one database" is the point
    other = await built(runner.storage, autostart=False)  # the only service that can run type b: not running yet
    other.register_handler(step_type + "-b", recording(calls, "b"))
    await other.define_pipeline(pipeline_id + "b", [{"step_name": "s", "step_type": step_type + "-b"}])
    await runner.define_pipeline(pipeline_id + "a", [{"step_name": "s", "step_type": step_type + "-a"}])
    waiting = await other.submit(tenant, pipeline_id + "b", "o", "b first")  # older: claimed first if claimable
    done = await runner.submit(tenant, pipeline_id + "a", "o", "a after")
    assert (await runner.wait(tenant, done["id"]))["status"] == "succeeded"
    detail = await runner.detail(tenant, waiting["id"])
    assert detail["steps"][0]["status"] == "pending" and calls == [("a", done["id"])]
    assert hosts(runner.handlers) == [step_type + "-a"] and hosts(other.handlers) == [step_type + "-b"]
    await other.start()
    assert (await other.wait(tenant, waiting["id"]))["status"] == "succeeded"
    assert calls[1:] == [("b", waiting["id"])]
    await other.executor.stop(timeout=5)
    await runner.stop(timeout=5)  # closes the Storage they share


async def test_a_stopped_services_registry_does_not_affect_another(built, database, tenant, pipeline_id,
                                                                    step_type):
    calls = []
    first = await built(database)
    first.register_handler(step_type, recording(calls, "first"))
    await first.define_pipeline(pipeline_id, [{"step_name": "s", "step_type": step_type}])
    await first.stop(timeout=5)
    second = await built(database)
    assert hosts(second.handlers) == []
    with pytest.raises(HandlerError, match="no handler is registered"):  # first's handler is not second's
        await second.submit(tenant, pipeline_id, "o", "refused")
    second.register_handler(step_type, recording(calls, "second"))
    first.unregister_handler(step_type)  # the stopped service drops its handler: second keeps its own
    task = await second.submit(tenant, pipeline_id, "o", "runs")
    assert (await second.wait(tenant, task["id"]))["status"] == "succeeded"
    assert calls == [("second", task["id"])]
    await second.stop(timeout=5)


def test_a_registry_handed_in_is_the_services_own(tmp_path):
    shared = HandlerRegistry()
    service = PipelineService(f"sqlite:///{tmp_path / 'x.db'}", handlers=shared)
    service.register_handler("kind", print)
    assert service.handlers is shared and shared.get("kind") is print


async def test_handlers_registered_before_the_default_service_exists_reach_it_and_survive_configure(tmp_path):
    """A host registers in its init function, before configure() builds the service; a later
    configure() (after shutdown) builds the next one with the same registry."""
    async def early(*args):
        return {"early": True}
    pipeline_service.register_handler("handlers-test-early", early)
    first = api.configure(f"sqlite:///{tmp_path / 'first.db'}")
    try:
        await first.storage.create_missing_tables(include_reference=True)
        await first.define_pipeline("p", [{"step_name": "s", "step_type": "handlers-test-early"}])
        task = await pipeline_service.pipeline_submit("t", "p", "o")
        assert (await first.wait("t", task["id"]))["status"] == "succeeded"
        pipeline_service.pipeline_register_handler("handlers-test-late", print)
        await api.shutdown()
        second = api.configure(f"sqlite:///{tmp_path / 'second.db'}", autostart=False)
        assert second.handlers.get("handlers-test-early") is early
        assert second.handlers.get("handlers-test-late") is print
        assert hosts(PipelineService(f"sqlite:///{tmp_path / 'own.db'}").handlers) == []
    finally:
        service = api.get_service()
        for step_type in ("handlers-test-early", "handlers-test-late"):
            service.unregister_handler(step_type)
        await api.shutdown()


def test_the_default_service_takes_no_registry_of_its_own(tmp_path):
    """A registry passed to configure() would be lost by the next configure(): refused."""
    with pytest.raises(ConfigurationError, match="pipeline_service.register_handler"):
        api.configure(f"sqlite:///{tmp_path / 'x.db'}", handlers=HandlerRegistry())
    assert not (tmp_path / "x.db").exists()


async def test_registering_wakes_the_executor(make_service, database, tenant, pipeline_id, step_type, monkeypatch):
    """A handler registered on a running service starts its ready steps now, not at the next poll."""
    service = make_service(database, poll_interval=60.0, require_handlers=False)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "s", "step_type": step_type}])
    probe, probed = service.storage.probe, asyncio.Event()

    async def watched_probe(*args, **kwargs):
        try:
            return await probe(*args, **kwargs)
        finally:
            probed.set()
    monkeypatch.setattr(service.storage, "probe", watched_probe)
    task = await service.submit(tenant, pipeline_id, "o", "waits for its handler")
    await probed.wait()  # the executor found nothing it can run: it waits out its 60 s poll interval
    service.register_handler(step_type, recording([], "late"))
    assert (await service.wait(tenant, task["id"], timeout=10))["status"] == "succeeded"


async def test_a_timeout_only_a_waiting_type_takes_is_refused_at_submit_once_a_plain_handler_runs_it(
        stepper, tenant, pipeline_id, step_type):
    """Defined for a handler that waits without a slot (a timeout of two days: allowed), then
    the type's handler is replaced by one that would hold a slot that long: a submit is refused,
    naming the bound, and writes nothing."""
    stepper.register_handler(step_type, approval.run)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "ask", "step_type": step_type,
                                                 "config": {"timeout": 2 * 86_400}}])

    async def plain(tenant_id, task_id, step_name, input_data, config):
        return {}
    stepper.register_handler(step_type, plain)
    with pytest.raises(InvalidInputError, match="config.timeout must be <= 86400 seconds"):
        await stepper.submit(tenant, pipeline_id, "o", "two days")
    assert (await stepper.list(tenant))["total"] == 0
