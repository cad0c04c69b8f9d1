"""pipeline_service: a production-line (DAG) execution engine for ahserver hosts."""
from .api import (configure, define_pipeline, get_service, pipeline_cancel, pipeline_detail, pipeline_list,
                  pipeline_modify, pipeline_node, pipeline_off, pipeline_on, pipeline_pause, pipeline_purge,
                  pipeline_register_handler, pipeline_resume, pipeline_schedule_create, pipeline_schedule_delete,
                  pipeline_schedule_list, pipeline_schedule_pause, pipeline_schedule_resume, pipeline_schedule_run_now,
                  pipeline_signal, pipeline_submit, register_handler, shutdown)
from .exceptions import (ConfigurationError, DatabaseUnavailableError, HandlerError, InvalidInputError,
                         InvalidStateError, NotFoundError, PipelineError, SchemaMissingError, StepFailed,
                         StorageError, WaitTimeoutError)
from .engine.handlers import HandlerRegistry
from .service import PipelineService
from .store.storage import Storage
from .waits import Wait, waiting_handler

__all__ = [
    "register_handler", "PipelineService", "HandlerRegistry", "Storage",
    "configure", "get_service", "shutdown", "define_pipeline",
    "pipeline_submit", "pipeline_list", "pipeline_detail", "pipeline_node", "pipeline_modify",
    "pipeline_pause", "pipeline_resume", "pipeline_cancel", "pipeline_purge", "pipeline_signal",
    "pipeline_register_handler", "Wait", "waiting_handler", "StepFailed",
    "pipeline_on", "pipeline_off",
    "pipeline_schedule_create", "pipeline_schedule_list", "pipeline_schedule_pause", "pipeline_schedule_resume",
    "pipeline_schedule_delete", "pipeline_schedule_run_now",
    "PipelineError", "NotFoundError", "InvalidInputError", "InvalidStateError", "HandlerError",
    "StorageError", "DatabaseUnavailableError", "SchemaMissingError", "ConfigurationError", "WaitTimeoutError",
]
