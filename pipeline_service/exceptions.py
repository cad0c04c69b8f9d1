"""The package's one exception hierarchy.

Every error a caller can see is a ``PipelineError``; the subclasses say what
kind of mistake it is so that a host can map them (e.g. to HTTP 404/400/409).
"""


class PipelineError(Exception):
    """Base class of every error raised by pipeline_service."""

    status = "error"


class NotFoundError(PipelineError):
    """The task, step, artifact or pipeline does not exist for this tenant."""

    status = "not_found"


class InvalidInputError(PipelineError, ValueError):
    """An argument is malformed; nothing was changed."""

    status = "invalid_input"


class InvalidStateError(PipelineError):
    """The operation is not allowed in the object's current state."""

    status = "invalid_state"


class HandlerError(InvalidInputError):
    """No handler is registered for a step type that a submitted pipeline uses."""

    status = "handler_error"


class StorageError(PipelineError):
    """The database could not be used."""

    status = "storage_error"


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached (host, port and database are named)."""


class SchemaMissingError(StorageError):
    """A table of the module does not exist: the schema has not been created."""


class ConfigurationError(PipelineError):
    """The host has not configured what the module needs."""

    status = "configuration_error"
