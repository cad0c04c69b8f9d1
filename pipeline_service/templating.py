"""Templates in step configs and ``when`` conditions, evaluated in Jinja2's sandbox (nothing else).

A string value of a step's config may use ``{{ params.x }}`` and ``{{ upstream.step.field }}``;
a step's ``when`` is an expression over the same two names.  Both are evaluated by an
``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: no Python ``eval``, no access to
private attributes, no changing the data, and a name or field that does not exist is an error
(a typo never renders as an empty string).  Params and upstream outputs are data: what they
hold is never parsed as a template again.

Whoever defines a pipeline writes its templates (trusted, like a handler); a tenant only
supplies the values.  Values templated into a ``shell`` step's ``command`` never become
shell code: each ``{{ }}`` renders as a reference to an environment variable
(``"${PIPELINE_VALUE_1}"``) whose value is added to the step's ``env`` (see ``render_config``):
the shell expands a variable into data, never into commands, wherever it stands.
"""
import contextvars
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .exceptions import InvalidInputError

# config keys the engine reads itself (dag.ENGINE_OPTIONS and the condition): never rendered
UNRENDERED = frozenset({"when", "timeout", "retries", "retry_delay"})
MAX_RENDERED_CHARS = 1024 * 1024  # of one rendered string: a template that grows past it is an error
MAX_REPEAT = 100_000              # items or characters a `*` or `**` in a template may make
MAX_TEMPLATES = 4096              # compiled templates and expressions kept per process
SHELL_VALUE = "PIPELINE_VALUE_{}"  # the environment variables a shell command's values are passed in
# a shell step's keys never rendered: a tenant's value must not choose which of the host's
# variables (its secrets) a command inherits (dag.definition_row refuses templates there)
SHELL_LITERAL = frozenset({"inherit_env"})
_MARKERS = ("{{", "{%", "{#")
_shell_values: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("shell_values", default=None)


class TemplateProblem(Exception):
    """A template or condition that cannot be rendered or evaluated (its message says where and why)."""


def as_text(value: Any) -> str:
    """A value as a rendered template shows it: strings as they are, numbers as numbers, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


@pass_context
def _finalize(context, value):
    """Each ``{{ }}`` value: as text, or (in a shell command) a reference to an environment variable."""
    if isinstance(value, Undefined):
        return value  # StrictUndefined raises when it is turned into text
    collected = _shell_values.get()
    if collected is None:
        return as_text(value)
    collected.append(as_text(value))
    return f"\0{len(collected)}\0"  # a marker: placed by _shell_references once the command is rendered


def _shell_references(text: str) -> str:
    """The rendered command with each value's marker replaced by a reference to its variable, quoted
    to suit where it stands: ``"${V}"`` outside quotes (one word, never split or globbed),
    ``${V}`` inside double quotes, and ``'"${V}"'`` inside single quotes (which expand nothing).
    The scan only decides how exact the value arrives: a variable is never run as code, wherever
    the scan thinks it is."""
    out, quote, i = [], None, 0
    while i < len(text):
        ch = text[i]
        if ch == "\0":
            end = text.index("\0", i + 1)
            name = "${" + SHELL_VALUE.format(text[i + 1:end]) + "}"
            out.append(f'"{name}"' if quote is None else name if quote == '"' else f"'\"{name}\"'")
            i = end + 1
            continue
        if ch == "\\" and quote != "'":
            if text[i + 1:i + 2] == "\0":
                raise TemplateProblem("command: a templated value right after a backslash")
            out.append(text[i:i + 2])
            i += 2
            continue
        if quote is None and ch in "'\"":
            quote = ch
        elif quote == ch:
            quote = None
        out.append(ch)
        i += 1
    return "".join(out)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also bounding what ``*`` and ``**`` can make (a memory bomb from one expression)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 1000:
            raise TemplateProblem(f"** with an exponent of {right} (at most 1000)")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise TemplateProblem(f"* would make {len(seq) * n} items (at most {MAX_REPEAT})")
        return super().call_binop(context, operator, left, right)


_env = _Sandbox(undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True)
del _env.globals["lipsum"]  # random text: a rendering must be reproducible


def is_template(text: object) -> bool:
    return isinstance(text, str) and any(m in text for m in _MARKERS)


@functools.lru_cache(maxsize=MAX_TEMPLATES)
def _compiled(source: str):
    """(the template, and its expression when ``source`` is one ``{{ expression }}`` and nothing else)."""
    template = _env.from_string(source)
    body = _env.parse(source).body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1 and not isinstance(
            body[0].nodes[0], nodes.TemplateData) and re.fullmatch(r"\{\{[^-+].*\}\}", source, re.S):
        try:
            return template, _env.compile_expression(source[2:-2], undefined_to_none=False)
        except TemplateError:  # e.g. whitespace control: rendered as text, as Jinja reads it
            pass
    return template, None


@functools.lru_cache(maxsize=MAX_TEMPLATES)
def _condition(source: str):
    return _env.compile_expression(source, undefined_to_none=False)


def check_template(source: str, where: str) -> None:
    """A template's syntax, checked when a pipeline is defined (an InvalidInputError naming ``where``)."""
    try:
        _compiled(source)
    except TemplateError as exc:
        raise InvalidInputError(f"{where} is not a valid template: {_said(exc)}") from None


def check_condition(source: object, where: str) -> str:
    """A ``when`` condition's syntax, checked when a pipeline is defined."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInputError(f"{where} must be an expression (a non-empty string), e.g. "
                                "\"params.mode == 'full'\", got " + (repr(source)[:80] if isinstance(source, str)
                                                                      else type(source).__name__))
    if is_template(source):
        raise InvalidInputError(f"{where} is an expression, written without {{{{ }}}}: got {source[:80]!r}")
    try:
        _condition(source)
    except TemplateError as exc:
        raise InvalidInputError(f"{where} is not a valid expression: {_said(exc)}") from None
    return source


def check_config_templates(config: Mapping[str, Any], where: str) -> None:
    """Every template among a config's string values, checked (define time)."""
    for path, text in _strings(config):
        if is_template(text):
            check_template(text, f"{where}.{path}")


def evaluate_condition(source: str, params: Any, upstream: Any) -> bool:
    """Whether a ``when`` holds for these params and upstream outputs (a TemplateProblem if it
    cannot be evaluated: a missing name or field, a type error, ...)."""
    try:
        return bool(_condition(source)(params=params, upstream=upstream))
    except TemplateProblem as exc:
        raise TemplateProblem(f"when {source!r}: {exc}") from None
    except Exception as exc:  # anything evaluating it raised: the template's problem, not the engine's
        raise TemplateProblem(f"when {source!r} cannot be evaluated: {_said(exc)}") from None


def needs_rendering(config: Mapping[str, Any]) -> bool:
    return any(is_template(text) for _, text in _strings(config))


def render_config(config: Mapping[str, Any], params: Any, upstream: Any, step_type: str) -> dict[str, Any]:
    """The config with every templated string value rendered (a new dict; a TemplateProblem naming
    the value that failed).  A string that is one ``{{ expression }}`` and nothing else takes the
    expression's value as it is (a number, a list, an object); any other renders as text.

    A ``shell`` step's ``command`` is rendered with each value passed as an environment variable:
    ``{{ params.topic }}`` becomes ``"${PIPELINE_VALUE_1}"`` and ``env`` gains ``PIPELINE_VALUE_1``
    with the value, so no value can ever be read as shell code."""
    variables = {"params": params, "upstream": upstream}
    literal = UNRENDERED | (SHELL_LITERAL if step_type == "shell" else frozenset())
    rendered = {k: (v if k in literal or (step_type == "shell" and k == "command") else _render(v, variables, k))
                for k, v in config.items()}
    if step_type == "shell" and is_template(config.get("command")):
        if "\0" in config["command"]:
            raise TemplateProblem("command holds a NUL character")
        values: list[str] = []
        token = _shell_values.set(values)
        try:
            rendered["command"] = _shell_references(_render_text(config["command"], variables, "command"))
        finally:
            _shell_values.reset(token)
        if values:
            env = rendered.get("env")
            if env is not None and not isinstance(env, dict):
                raise TemplateProblem("env must be an object of environment variables when command uses templates")
            names = {SHELL_VALUE.format(i): v for i, v in enumerate(values, start=1)}
            rendered["env"] = {**(env or {}), **names}
    return rendered


def _render(value, variables, path):
    if isinstance(value, str):
        return _render_string(value, variables, path) if is_template(value) else value
    if isinstance(value, dict):
        return {k: _render(v, variables, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _template(source, path):
    try:
        return _compiled(source)
    except TemplateError as exc:  # a definition written straight into the tables: checked only now
        raise TemplateProblem(f"config.{path} is not a valid template: {_said(exc)}") from None


def _render_string(source, variables, path):
    template, expression = _template(source, path)
    if expression is None:
        return _render_text(source, variables, path)
    try:
        value = expression(**variables)
        if isinstance(value, Undefined):
            str(value)  # raises: the name or field is missing
    except TemplateProblem as exc:
        raise TemplateProblem(f"config.{path}: {exc}") from None
    except Exception as exc:
        raise TemplateProblem(f"config.{path} cannot be rendered: {_said(exc)}") from None
    return _plain(value, path)


def _render_text(source, variables, path):
    template, _ = _template(source, path)
    try:
        text = template.render(**variables)
    except TemplateProblem as exc:
        raise TemplateProblem(f"config.{path}: {exc}") from None
    except Exception as exc:
        raise TemplateProblem(f"config.{path} cannot be rendered: {_said(exc)}") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateProblem(f"config.{path} renders to {len(text)} characters (at most {MAX_RENDERED_CHARS})")
    return text


def _plain(value, path):
    """An expression's value as JSON data (a copy), or a TemplateProblem."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise TemplateProblem(f"config.{path} renders to a {type(value).__name__}, which is not JSON data") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateProblem(f"config.{path} renders to {len(text)} characters (at most {MAX_RENDERED_CHARS})")
    return json.loads(text)


def _strings(value, path=""):
    """(path, text) of every string value in a config, the engine's own keys left out."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not (path == "" and k in UNRENDERED):
                yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _said(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

