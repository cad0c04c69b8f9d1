"""The ``shell`` step type: run a command on the host (docs/STEP_TYPES.md, "shell").

Off unless the host sets ``shell_root``.  The command runs in a process group of its own
(a new session), with an environment built from nothing but a few harmless variables and
what the step lists; a timeout or a cancel kills the whole group, and so does the end of
the step (nothing it started outlives it, unless it left its session on purpose).  Values
templated into ``command`` arrive as environment variables (see templating.render_config),
so a tenant's value is never read as shell code.
"""
import asyncio
import json
import os
import signal
from typing import Any

from ..exceptions import InvalidInputError

DEFAULT_TIMEOUT = 180.0          # seconds, when the step's config sets no timeout
DEFAULT_OUTPUT_LIMIT = 65_536    # bytes of stdout (and of stderr) kept: head and tail
MAX_OUTPUT_LIMIT = 1024 * 1024   # a step's output is stored (4 MiB at most in all)
ERROR_TAIL = 1000                # characters of stderr in the error of a failed command
# the only variables of the host's environment a command gets without listing them: no secrets
BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
KEYS = {"command", "argv", "workdir", "env", "inherit_env", "timeout", "ok_exit_codes", "output_limit",
        "parse_json", "retries", "retry_delay", "when"}


class CommandFailed(Exception):
    """The command ended with an exit code the step does not accept, or its output is not as asked."""


def _argv(config: dict[str, Any]) -> list[str]:
    command, argv = config.get("command"), config.get("argv")
    if (command is None) == (argv is None):
        raise InvalidInputError("a shell step's config needs either command (a string run by /bin/sh -c) or argv "
                                "(a list of strings, run without a shell), not both")
    if command is not None:
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise InvalidInputError("config.command must be a non-empty string (run by /bin/sh -c)")
        return ["/bin/sh", "-c", command]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, (str, int, float)) and not isinstance(
            a, bool) for a in argv):
        raise InvalidInputError("config.argv must be a non-empty list of strings (the program and its arguments)")
    args = [a if isinstance(a, str) else str(a) for a in argv]
    if any("\0" in a for a in args):
        raise InvalidInputError("config.argv holds a NUL character")
    return args


def _workdir(root: str, config: dict[str, Any]) -> str:
    """The directory the command runs in: config.workdir, relative to shell_root (or absolute inside it)."""
    workdir = config.get("workdir")
    if workdir is None:
        return root
    if not isinstance(workdir, str) or "\0" in workdir:
        raise InvalidInputError("config.workdir must be a path (relative to the host's shell_root)")
    path = os.path.realpath(os.path.join(root, workdir))
    if path != root and not path.startswith(root + os.sep):
        raise InvalidInputError(f"config.workdir {workdir!r} is outside the host's shell_root: a shell step runs "
                                "only under it")
    if not os.path.isdir(path):
        raise InvalidInputError(f"config.workdir {workdir!r} is not a directory under the host's shell_root")
    return path


def _environment(config: dict[str, Any], workdir: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = workdir
    inherit = config.get("inherit_env") or []
    if not isinstance(inherit, list) or not all(isinstance(n, str) for n in inherit):
        raise InvalidInputError("config.inherit_env must be a list of the names of host variables to pass on")
    env.update({name: os.environ[name] for name in inherit if name in os.environ})
    extra = config.get("env") or {}
    if not isinstance(extra, dict):
        raise InvalidInputError("config.env must be an object of environment variables")
    for name, value in extra.items():
        if not name or "=" in name or "\0" in name:
            raise InvalidInputError(f"config.env has an invalid variable name {name!r}")
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\0" in text:
            raise InvalidInputError(f"config.env {name!r} holds a NUL character (an environment variable cannot)")
        env[name] = text
    return env


def _number(config, key, default, low, high, kind=float):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high or (
            kind is int and not isinstance(value, int)):
        raise InvalidInputError(f"config.{key} must be a number from {low} to {high}, got {value!r}")
    return value


class _Kept:
    """The head and the tail of a stream, at most ``limit`` bytes in all."""

    def __init__(self, limit: int) -> None:
        self.head_limit, self.tail_limit = limit - limit // 2, limit // 2
        self.head, self.tail = bytearray(), bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                self.truncated = True
                del self.tail[:len(self.tail) - self.tail_limit]

    def text(self) -> str:
        if self.truncated:
            return (self.head.decode("utf-8", "replace") + "\n…[truncated]…\n" + self.tail.decode("utf-8", "replace"))
        return (self.head + self.tail).decode("utf-8", "replace")


async def _drain(stream: asyncio.StreamReader | None, kept: _Kept) -> None:
    while stream is not None and (chunk := await stream.read(65_536)):
        kept.add(chunk)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def run(root: str, tenant_id: str, task_id: str, step_name: str, input_data: dict[str, Any],
              config: dict[str, Any]) -> dict[str, Any]:
    """Run the step's command; its output ``{exit_code, stdout, stderr, truncated, json}``."""
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise InvalidInputError(f"a shell step's config has unknown keys {', '.join(unknown)}: the keys are "
                                f"{', '.join(sorted(KEYS))}")
    argv = _argv(config)
    workdir = _workdir(root, config)
    env = _environment(config, workdir)
    timeout = _number(config, "timeout", DEFAULT_TIMEOUT, 0.001, 86_400.0)
    limit = _number(config, "output_limit", DEFAULT_OUTPUT_LIMIT, 2, MAX_OUTPUT_LIMIT, int)
    ok_codes = config.get("ok_exit_codes", [0])
    if not isinstance(ok_codes, list) or not ok_codes or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in ok_codes):
        raise InvalidInputError("config.ok_exit_codes must be a non-empty list of whole numbers")
    out, err = _Kept(limit), _Kept(limit)
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)  # its own process group: killed as a whole
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(_drain(process.stdout, out), _drain(process.stderr, err))
                code = await process.wait()
        except TimeoutError:
            raise CommandFailed(f"the command timed out after {timeout:g}s; its process group was killed "
                                f"(stderr: {_tail(err)})") from None
    finally:
        _kill_group(process.pid)  # whatever it left running (a timeout, a cancel, a background child)
        if process.returncode is None:
            await asyncio.shield(process.wait())
    if code not in ok_codes:
        raise CommandFailed(f"the command exited with code {code} (accepted: {ok_codes}); stderr: {_tail(err)}")
    stdout = out.text()
    parsed = None
    if config.get("parse_json"):
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            raise CommandFailed("parse_json: the command printed nothing on stdout")
        try:
            parsed = json.loads(lines[-1])
        except ValueError as exc:
            raise CommandFailed(f"parse_json: the last line of stdout is not JSON ({exc}): "
                                f"{lines[-1][:200]!r}") from None
    return {"exit_code": code, "stdout": stdout, "stderr": err.text(),
            "truncated": out.truncated or err.truncated, "json": parsed}


def _tail(kept: _Kept) -> str:
    text = kept.text().strip()
    return repr(text[-ERROR_TAIL:]) if text else "(empty)"
