"""The built-in step types: ordinary handlers, registered by default.

The waiting ones — ``approval``, ``wait``, ``delegate`` — return a ``waits.Wait`` and are
called again when it ends (docs/SEMANTICS.md, "Waiting steps"); they need no host option.
"""
from collections.abc import Callable

from . import approval, delegate, wait

# name -> handler
WAITING_BUILTINS: dict[str, Callable] = {
    "approval": approval.run,
    "wait": wait.run,
    "delegate": delegate.run,
}


def register_waiting_builtins(registry) -> None:
    """Register the waiting built-ins into ``registry`` where the host has no handler of that name."""
    for name, fn in WAITING_BUILTINS.items():
        if registry.get(name) is None:
            registry.register(name, fn)
