"""The handler registry: step_type -> the function that does the step's work.

A handler is ``async def handler(tenant_id, task_id, step_name, input_data, config) -> dict``;
a plain function is run in a worker thread so it never blocks the event loop.
"""
import asyncio
import inspect
import logging

from .exceptions import InvalidInputError

log = logging.getLogger(__name__)
_handlers = {}


def register_handler(step_type, fn):
    """Register ``fn`` for ``step_type``; registering again replaces (and logs it)."""
    if not isinstance(step_type, str) or not step_type.strip():
        raise InvalidInputError(f"step_type must be a non-empty string, got {step_type!r}")
    if not callable(fn):
        raise InvalidInputError(f"the handler for step_type {step_type!r} is not callable: {fn!r}")
    if step_type in _handlers and _handlers[step_type] is not fn:
        log.info("handler for step_type %r replaced: %r -> %r", step_type, _handlers[step_type], fn)
    _handlers[step_type] = fn
    return fn


def get_handler(step_type):
    return _handlers.get(step_type)


def registered_step_types():
    return sorted(_handlers)


def unregister_handler(step_type):
    _handlers.pop(step_type, None)


async def call_handler(fn, tenant_id, task_id, step_name, input_data, config):
    """Run a handler: awaited if async, in a worker thread if plain."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        result = await fn(tenant_id, task_id, step_name, input_data, config)
    else:
        result = await asyncio.to_thread(fn, tenant_id, task_id, step_name, input_data, config)
    if inspect.isawaitable(result):
        result = await result
    return result
