"""pipeline_service: a production-line (DAG) execution engine for ahserver hosts."""
from .exceptions import (ConfigurationError, DatabaseUnavailableError, HandlerError, InvalidInputError,
                         InvalidStateError, NotFoundError, PipelineError, SchemaMissingError, StorageError)
from .storage import Storage

__all__ = [
    "Storage",
    "PipelineError", "NotFoundError", "InvalidInputError", "InvalidStateError", "HandlerError",
    "StorageError", "DatabaseUnavailableError", "SchemaMissingError", "ConfigurationError",
]
