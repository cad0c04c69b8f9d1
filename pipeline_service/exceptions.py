"""The package's one exception hierarchy.

Every error a caller can provoke — bad input, a state that does not allow the
operation, a database that is missing or unreachable, a configuration that is
incomplete, a wait that ran out — is a ``PipelineError``; the subclasses say what
kind it is so that a host can map them (e.g. to HTTP 404/400/409).  The fuzz test
(tests/test_fuzz.py) holds every public function to this.

A plain ``ValueError``, ``KeyError`` or ``RuntimeError`` raised inside the package
(a statement name that does not exist, sqlor resolving another driver class than
asked) is a bug of the package itself, never a caller's mistake: it is not wrapped,
so that it is seen as one.
"""


class PipelineError(Exception):
    """Base class of every error raised by pipeline_service."""

    status: str = "error"


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


class StepFailed(PipelineError):
    """Raised by a handler to fail its attempt with exactly this message (an approval rejected:
    "rejected by alice"), not the exception's name and message as anything else it raises."""
    status = "step_failed"


class StorageError(PipelineError):
    """The database could not be used."""

    status = "storage_error"


class DuplicateKeyError(StorageError):
    """A unique key refused a second row (an idempotency key, a schedule's tick): the engine
    reads the row that holds the key instead; it leaves the package only where it says so."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached (host, port and database are named)."""


class SchemaMissingError(StorageError):
    """A table of the module does not exist: the schema has not been created."""


class WaitTimeoutError(PipelineError, TimeoutError):
    """``PipelineService.wait`` ran out of time before the task ended."""

    status = "timeout"


class ConfigurationError(PipelineError):
    """The host has not configured what the module needs."""

    status = "configuration_error"
