"""The DAG of a task: step definitions and their options, the DAG, the cascade plan.

The DAG is built from the task's step snapshot (the rows of
``pipeline_task_steps``, or of ``pipeline_steps`` at submit) and validated once.
(Statuses and their transitions are in ``status.py``.)
"""
import functools
import heapq
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .json_objects import MAX_CONFIG_BYTES, MAX_JSON_BYTES, check_json_object, parse_json_object, to_json
from .exceptions import InvalidInputError
from .ids import check_name
from .templating import SHELL_LITERAL, check_condition, check_config_templates, is_template, needs_rendering

ENGINE_OPTIONS = ("timeout", "retries", "retry_delay")  # and `when` (templating.py): the engine's config keys
# bounds of the engine options: beyond them a value is a mistake (and 1e300 s or inf
# overflow the millisecond columns); a step needing longer runs without a timeout
MAX_SECONDS = 86_400.0   # timeout, retry_delay (and the delay after any retry): one day
# the timeout of a step whose handler waits without a slot (an approval's deadline: it holds no
# worker meanwhile, so a day is no bound for it), and a wait step's seconds: a year
MAX_WAIT_SECONDS = 366 * 86_400.0
MAX_RETRIES = 100
MIN_INT, MAX_INT = -2**31, 2**31 - 1  # an INT column (seq, versions)
STEP_KEYS = ("step_name", "step_type", "depends_on", "config", "seq")


def check_whole(value: object, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) within the bounds, else an InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        raise InvalidInputError(f"{what} must be a whole number{_bounds(minimum, maximum)}, got {_number(value)}")
    return value


def check_seconds(value: Any, what: str, minimum: float = 0.0, maximum: float = MAX_SECONDS,
                  allow_minimum: bool = True) -> float:
    """``value`` if it is a finite number of seconds within the bounds, else an InvalidInputError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        value >= minimum if allow_minimum else value > minimum) and value <= maximum
    if not ok:
        low = f">= {_seconds(minimum)}" if allow_minimum else f"> {_seconds(minimum)}"
        raise InvalidInputError(f"{what} must be a number of seconds {low} and <= {_seconds(maximum)}, got "
                                f"{_number(value)}")
    return value


def _seconds(value: float) -> str:
    """A bound as a person reads it: 31622400, not 3.16224e+07."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    return f" >= {minimum}" if minimum is not None else (f" <= {maximum}" if maximum is not None else "")


def _number(value: object) -> str:
    """A rejected option for a message: numbers as such, anything else by its type (its repr may be huge)."""
    short = isinstance(value, float) or (isinstance(value, int) and abs(value) < 10**30)
    return repr(value) if short else type(value).__name__


@dataclass(frozen=True)
class StepDef:
    """One step as defined (at submit time, for a task)."""

    name: str
    step_type: str
    depends_on: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    seq: int = 0

    @functools.cached_property
    def templated(self) -> bool:
        """Whether its config has templates to render (templating.py); asked for every step made ready."""
        return needs_rendering(self.config)

    # its depends_on and its config as a task's step row stores them (JSON texts): made once per
    # definition (it is cached), not at every submit or for every handler's copy of its config
    @functools.cached_property
    def depends_on_text(self) -> str:
        return to_json(list(self.depends_on))

    @functools.cached_property
    def config_text(self) -> str:
        return to_json(self.config)

    @property
    def timeout(self) -> float | None:
        return self.config.get("timeout")

    @property
    def max_attempts(self) -> int:
        return 1 + int(self.config.get("retries") or 0)

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the retry that follows failed attempt number ``attempt`` (1-based),
        doubling each time, never more than MAX_SECONDS."""
        return min(MAX_SECONDS, float(self.config.get("retry_delay") or 0) * 2.0 ** min(attempt - 1, 64))


def parse_depends_on(value: object, step_name: str = "?") -> tuple[str, ...]:
    """A JSON list of step names, a comma-separated string, or empty/None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise InvalidInputError(f"step {step_name!r}: depends_on is not a JSON list: {exc}") from None
            except RecursionError:
                raise InvalidInputError(f"step {step_name!r}: depends_on is not a list of step names") from None
        else:
            value = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"step {step_name!r}: depends_on must be a list of step names, got {shown}")
    return tuple(dict.fromkeys(value))


def parse_config(value: object, step_name: str = "?") -> dict[str, Any]:
    """A JSON object (or empty); engine options are checked, the rest passed through."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    value = parse_json_object(value, f"step {step_name!r}: config", MAX_CONFIG_BYTES, "a step config's limit")
    timeout, retries, delay = (value.get(k) for k in ENGINE_OPTIONS)
    if timeout is not None:  # a handler's own bound is its type's: check_timeouts
        check_seconds(timeout, f"step {step_name!r}: config.timeout", maximum=MAX_WAIT_SECONDS,
                      allow_minimum=False)
    if retries is not None:
        check_whole(retries, f"step {step_name!r}: config.retries", 0, MAX_RETRIES)
    if delay is not None:
        check_seconds(delay, f"step {step_name!r}: config.retry_delay")
    return value


def check_timeouts(steps: Iterable[StepDef], waits: Callable[[str], bool]) -> None:
    """Each step's ``timeout`` within the bound of its type (docs/STEP_TYPES.md): MAX_WAIT_SECONDS for
    a type whose handler here waits without a slot (``waits(step_type)``), MAX_SECONDS for any other
    (a handler that runs as long, or none registered yet: the stricter bound until one says it waits)."""
    for step in steps:
        if step.timeout is not None and step.timeout > MAX_SECONDS and not waits(step.step_type):
            raise InvalidInputError(
                f"step {step.name!r}: config.timeout must be <= {_seconds(MAX_SECONDS)} seconds (a day) for step "
                f"type {step.step_type!r}, whose handler runs that long, got {_number(step.timeout)}; only step "
                f"types that wait without a slot (approval, wait, delegate) take up to "
                f"{_seconds(MAX_WAIT_SECONDS)} seconds (366 days)")


def step_from_row(row: Mapping[str, Any]) -> StepDef:
    name = check_name(row["step_name"], "step_name")
    return StepDef(name=name, step_type=row["step_type"], depends_on=parse_depends_on(row.get("depends_on"), name),
                   config=parse_config(row.get("config"), name),
                   seq=check_whole(row.get("seq") or 0, f"step {name!r}: seq", MIN_INT, MAX_INT))


def definition_rows(pipeline_id: str, steps: object) -> list[dict[str, Any]]:
    """The steps of ``define_pipeline`` checked (each step, then the DAG) as pipeline_steps
    columns, before anything is written."""
    if not isinstance(steps, (list, tuple)):
        raise InvalidInputError(f"steps must be a list of dicts with keys {', '.join(STEP_KEYS)}, got "
                                f"{type(steps).__name__}")
    rows = [definition_row(spec, position) for position, spec in enumerate(steps, start=1)]
    Dag.from_rows(rows, f"pipeline {pipeline_id!r}")
    return rows


def definition_row(spec: object, position: int) -> dict[str, Any]:
    """A step of ``define_pipeline`` (a dict), checked, as the columns of a pipeline_steps row."""
    if not isinstance(spec, dict):
        raise InvalidInputError(f"a step is a dict with keys {', '.join(STEP_KEYS)}, got {type(spec).__name__}")
    unknown = [k for k in spec if k not in STEP_KEYS]
    if unknown:
        raise InvalidInputError(f"a step has unknown keys {', '.join(map(ascii, unknown))[:200]}: the keys are "
                                f"{', '.join(STEP_KEYS)}")
    name = check_name(spec.get("step_name"), "step_name")
    config = parse_config(spec.get("config"), name)
    # checked here, where a person defines it: a task's rows are read as they are (an error in a
    # definition written straight into the tables fails the step's attempt, saying why)
    if "when" in config:
        check_condition(config["when"], f"step {name!r}: config.when")
    check_config_templates(config, f"step {name!r}: config")
    step_type = check_name(spec.get("step_type"), f"step {name!r}: step_type")
    for key in SHELL_LITERAL if step_type == "shell" else ():
        value = config.get(key)
        if any(is_template(text) for text in (value if isinstance(value, list) else [value])):
            raise InvalidInputError(f"step {name!r}: config.{key} is not templated: a value from params must not "
                                    "choose which of the host's variables a command gets")
    return dict(step_name=name, step_type=step_type,
                depends_on=to_json(list(parse_depends_on(spec.get("depends_on"), name))),
                config=to_json(config),
                seq=check_whole(spec.get("seq", position), f"step {name!r}: seq", MIN_INT, MAX_INT))


class Dag:
    """A validated DAG of steps: topological order, successors, downstream sets."""

    def __init__(self, steps: Iterable[StepDef], label: str = "pipeline") -> None:
        steps = list(steps)
        if not steps:
            raise InvalidInputError(f"{label} has no steps")
        self.steps: dict[str, StepDef] = {}
        for step in steps:
            check_name(step.name, f"{label}: step_name")
            check_name(step.step_type, f"{label}: step {step.name!r}: step_type")
            if step.name in self.steps:
                raise InvalidInputError(f"{label}: duplicate step name {step.name!r}")
            self.steps[step.name] = step
        self.successors: dict[str, list[str]] = {name: [] for name in self.steps}
        for step in steps:
            for dep in step.depends_on:
                if dep == step.name:
                    raise InvalidInputError(f"{label}: step {step.name!r} depends on itself")
                if dep not in self.steps:
                    raise InvalidInputError(f"{label}: step {step.name!r} depends on unknown step {dep!r}")
                self.successors[dep].append(step.name)
        self.order = self._topological_order(label)
        self.position = {name: i for i, name in enumerate(self.order)}

    def _topological_order(self, label: str) -> list[str]:
        """Kahn's algorithm with a heap (n log n: a DAG of 10,000 steps is built at every
        submit and plan); among the steps free to go, display order (seq, name) first."""
        indegree = {name: len(step.depends_on) for name, step in self.steps.items()}
        ready = [(self.steps[n].seq, n) for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            name = heapq.heappop(ready)[1]
            order.append(name)
            for succ in self.successors[name]:
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    heapq.heappush(ready, (self.steps[succ].seq, succ))
        if len(order) < len(self.steps):
            raise InvalidInputError(f"{label}: the steps form a cycle: {' -> '.join(self._a_cycle(set(order)))}")
        return order

    def _a_cycle(self, acyclic: set[str]) -> list[str]:
        """One cycle among the steps not in ``acyclic``, as a closed path of names."""
        start = next(n for n in self.steps if n not in acyclic)
        path, seen = [start], {start: 0}
        while True:
            nxt = next(d for d in self.steps[path[-1]].depends_on if d not in acyclic)
            if nxt in seen:
                return path[seen[nxt]:] + [nxt]
            seen[nxt] = len(path)
            path.append(nxt)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], label: str) -> "Dag":
        """The DAG of step rows (of pipeline_steps or pipeline_task_steps)."""
        return cls([step_from_row(r) for r in rows], label=label)

    def roots(self) -> list[str]:
        return [n for n in self.order if not self.steps[n].depends_on]

    def downstream(self, names: Iterable[str]) -> set[str]:
        """Every step reachable from ``names`` (breadth first), excluding ``names`` themselves."""
        start = set(names)
        seen, queue = set(), deque(start)
        while queue:
            for succ in self.successors[queue.popleft()]:
                if succ not in seen:
                    seen.add(succ)
                    queue.append(succ)
        return seen - start


def check_updates(updates: object, rerun_from: object = None,
                  max_bytes: int = MAX_JSON_BYTES) -> dict[str, dict[str, Any]]:
    """The arguments of a modify, checked before anything is read: ``updates`` maps step
    names to ``{'output': {...}}`` and/or ``{'input': {...}}`` (JSON objects)."""
    if not isinstance(updates, dict):
        raise InvalidInputError(f"updates must be a dict of step name -> {{'output'|'input': {{...}}}}, got "
                                f"{type(updates).__name__}")
    for name, edit in updates.items():
        check_name(name, "a step name in updates")
        if not isinstance(edit, dict) or not edit or set(edit) - {"output", "input"}:
            raise InvalidInputError(f"the update of step {name!r} must be {{'output': {{...}}}} and/or "
                                    f"{{'input': {{...}}}}")
        for kind, content in edit.items():
            check_json_object(content, f"the new {kind} of step {name!r}", max_bytes=max_bytes)
    if rerun_from is not None:
        check_name(rerun_from, "rerun_from")
    return updates


@dataclass(frozen=True)
class CascadePlan:
    """What a human edit changes: every tuple is in topological order."""

    edited_outputs: tuple[str, ...]
    edited_inputs: tuple[str, ...]
    rerun: tuple[str, ...]        # steps reset and run again
    interrupted: tuple[str, ...]  # steps whose running handler must be stopped first


def cascade_plan(dag: Dag, updates: dict[str, dict[str, Any]], rerun_from: str | None = None) -> CascadePlan:
    """The affected set of a modify (docs/SEMANTICS.md), computed by BFS over the DAG.

    Re-run: the downstream steps of every edited output, every step whose input
    was edited (and its downstream: its new output changes theirs), and
    ``rerun_from`` with its downstream.  A step whose output was edited is not
    itself re-run: the person's output stands.
    """
    check_updates(updates, rerun_from)
    for name in updates:
        if name not in dag.steps:
            raise InvalidInputError(f"updates names an unknown step {name!r}")
    if rerun_from is not None and rerun_from not in dag.steps:
        raise InvalidInputError(f"rerun_from names an unknown step {rerun_from!r}")
    if not updates and rerun_from is None:
        raise InvalidInputError("nothing to do: give updates, rerun_from, or both")
    outputs = {n for n, e in updates.items() if "output" in e}
    inputs = {n for n, e in updates.items() if "input" in e}
    affected = dag.downstream(outputs) | inputs | dag.downstream(inputs)
    if rerun_from is not None:
        affected |= {rerun_from} | dag.downstream([rerun_from])
    affected -= outputs
    order = dag.order
    rerun = tuple(n for n in order if n in affected)
    return CascadePlan(edited_outputs=tuple(n for n in order if n in outputs),
                       edited_inputs=tuple(n for n in order if n in inputs - outputs),
                       rerun=rerun, interrupted=tuple(n for n in order if n in affected | outputs))
