"""The built-in step types (docs/STEP_TYPES.md): ordinary handlers, registered by default.

Every ``PipelineService`` puts them under its host's handlers (``HandlerRegistry.set_builtins``),
so a host may replace any of them by registering its own handler under the same name.  The
host options they need (``shell_root``, ``http_allow``) are a ``StepOptions``; a type that is off
on a host (``shell`` without ``shell_root``) is listed with the reason, so a submit that uses it
is refused with that reason.

A new built-in is one entry of ``BUILTINS``: its name and a function of the options giving its
handler, or the message saying why it is off.

The waiting ones — ``approval``, ``wait``, ``delegate`` — return a ``waits.Wait`` and are called
again when it ends (docs/SEMANTICS.md, "Waiting steps"); they need no host option.
"""
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..exceptions import InvalidInputError
from . import approval, delegate, http, shell, wait

MAX_PATTERNS = 1000


@dataclass(frozen=True)
class StepOptions:
    """The host options of the built-in step types (PipelineService / configure() keywords and
    config.json ``pipeline_service`` entries)."""

    shell_root: str | None = None                 # shell is on, with every workdir under it
    http_allow: tuple[str, ...] | None = None     # the hosts an http step may reach (None: any)

    @classmethod
    def checked(cls, shell_root: object = None, http_allow: object = None) -> "StepOptions":
        """The options, checked (an InvalidInputError naming the bad one)."""
        root = None
        if shell_root is not None:
            if not isinstance(shell_root, (str, os.PathLike)) or not str(shell_root).strip():
                raise InvalidInputError(f"shell_root must be the path of a directory, got {type(shell_root).__name__}")
            root = os.path.realpath(os.fspath(shell_root))
            if not os.path.isdir(root):
                raise InvalidInputError(f"shell_root {str(shell_root)!r} is not a directory: create it, or give the "
                                        "directory under which shell steps may run")
        allow = None
        if http_allow is not None:
            if isinstance(http_allow, str) or not isinstance(http_allow, (list, tuple)) or len(
                    http_allow) > MAX_PATTERNS or not all(isinstance(p, str) and p.strip() for p in http_allow):
                raise InvalidInputError("http_allow must be a list of host patterns (e.g. [\"api.example.com\", "
                                        f"\"*.example.org\", \"127.0.0.1:8080\"]), got {type(http_allow).__name__}")
            allow = tuple(p.strip().lower() for p in http_allow)
        return cls(shell_root=root, http_allow=allow)


def _shell(options: StepOptions) -> Callable | str:
    if options.shell_root is None:
        return ("step type 'shell' runs commands on the host and is off here: the host enables it with the "
                "option shell_root (PipelineService(..., shell_root=DIR), configure(shell_root=DIR) or "
                "config.json pipeline_service.shell_root), the directory its steps run under")
    return partial(shell.run, options.shell_root)


def _http(options: StepOptions) -> Callable | str:
    return partial(http.run, options.http_allow)


# name -> (options -> its handler, or why it is off on this host)
BUILTINS: dict[str, Callable[[StepOptions], Callable | str]] = {
    "shell": _shell,
    "http": _http,
    "approval": lambda options: approval.run,
    "wait": lambda options: wait.run,
    "delegate": lambda options: delegate.run,
}


def builtins(options: StepOptions) -> Mapping[str, Any]:
    """The built-in step types for a service with these options: name -> handler or the reason it is off."""
    return {name: make(options) for name, make in BUILTINS.items()}
