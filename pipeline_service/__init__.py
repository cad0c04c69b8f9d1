"""pipeline_service: a production-line (DAG) execution engine for ahserver hosts."""
from .api import (configure, define_pipeline, get_service, pipeline_cancel, pipeline_detail, pipeline_list,
                  pipeline_modify, pipeline_node, pipeline_pause, pipeline_register_handler, pipeline_resume,
                  pipeline_submit, shutdown)
from .exceptions import (ConfigurationError, DatabaseUnavailableError, HandlerError, InvalidInputError,
                         InvalidStateError, NotFoundError, PipelineError, SchemaMissingError, StorageError)
from .engine.handlers import register_handler
from .service import PipelineService
from .store.storage import Storage

__all__ = [
    "register_handler", "PipelineService", "Storage",
    "configure", "get_service", "shutdown", "define_pipeline",
    "pipeline_submit", "pipeline_list", "pipeline_detail", "pipeline_node", "pipeline_modify",
    "pipeline_pause", "pipeline_resume", "pipeline_cancel", "pipeline_register_handler",
    "PipelineError", "NotFoundError", "InvalidInputError", "InvalidStateError", "HandlerError",
    "StorageError", "DatabaseUnavailableError", "SchemaMissingError", "ConfigurationError",
]
