"""The module-level functions of SPEC §1, bound to one default PipelineService.

The default service is built on first use: from ``configure(database=...)`` if the
caller gave one, else from the host's configuration (config.json +
get_module_dbname), else the embedded SQLite file ``pipeline_service.db``.
"""
from . import hostenv
from .handler import register_handler
from .service import PipelineService

_service = None
_hosted = False  # set by load_pipeline_service(): then the host must configure the database


def use_host_configuration():
    global _hosted
    _hosted = True


def configure(database=None, **options):
    """Choose the database (and executor options) of the default service.

    Call before the first pipeline_* call, or after ``await shutdown()``.
    """
    global _service
    if database is None:
        database = hostenv.host_database(required=_hosted) or hostenv.EMBEDDED_DEFAULT
        options.setdefault("create_schema", database == hostenv.EMBEDDED_DEFAULT)
    _service = PipelineService(database, **options)
    return _service


def get_service():
    return _service if _service is not None else configure()


async def shutdown(timeout=30.0):
    """Stop the default service's executor gracefully and close its database."""
    global _service
    if _service is not None:
        service, _service = _service, None
        await service.stop(timeout=timeout)


async def pipeline_submit(tenant_id, pipeline_id, owner_id, title=None, params=None):
    return await get_service().submit(tenant_id, pipeline_id, owner_id, title, params)


async def pipeline_list(tenant_id, pipeline_id=None, status=None, page=1, rows=20):
    return await get_service().list(tenant_id, pipeline_id=pipeline_id, status=status, page=page, rows=rows)


async def pipeline_detail(tenant_id, task_id):
    return await get_service().detail(tenant_id, task_id)


async def pipeline_node(tenant_id, task_id, step_name, version=None):
    return await get_service().node(tenant_id, task_id, step_name, version)


async def pipeline_modify(tenant_id, task_id, updates, rerun_from=None):
    return await get_service().modify(tenant_id, task_id, updates, rerun_from)


async def pipeline_pause(tenant_id, task_id):
    return await get_service().pause(tenant_id, task_id)


async def pipeline_resume(tenant_id, task_id):
    return await get_service().resume(tenant_id, task_id)


async def pipeline_cancel(tenant_id, task_id):
    return await get_service().cancel(tenant_id, task_id)


def pipeline_register_handler(step_type, fn):
    return register_handler(step_type, fn)


async def define_pipeline(pipeline_id, steps, name=None, description=None):
    return await get_service().define_pipeline(pipeline_id, steps, name=name, description=description)
