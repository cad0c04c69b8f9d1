"""The DAG of a task and the state machines of tasks and steps.

The DAG is built from the task's step snapshot (the rows of
``pipeline_task_steps``, or of ``pipeline_steps`` at submit) and validated once;
the state machines are tables of allowed transitions.
"""
import heapq
import json
from collections import deque
from dataclasses import dataclass, field

from .artifacts import parse_json_object
from .exceptions import InvalidInputError, InvalidStateError

TASK_STATUSES = ("pending", "running", "paused", "succeeded", "failed", "cancelled")
# `skipped`: never ran because an upstream step failed (the task is `failed`).
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")

TASK_TRANSITIONS = {
    "pending": {"running", "paused", "cancelled"},
    "running": {"paused", "succeeded", "failed", "cancelled"},
    "paused": {"running", "cancelled"},
    "succeeded": {"running"},   # a human edit re-runs part of it
    "failed": {"running"},      # retry from a step / edit
    "cancelled": set(),         # terminal
}
STEP_TRANSITIONS = {
    "pending": {"running", "cancelled", "skipped"},
    "running": {"succeeded", "failed", "pending", "cancelled"},  # pending: retry or lost claim
    "succeeded": {"pending"},
    "failed": {"pending"},
    "skipped": {"pending"},
    "cancelled": set(),
}
TERMINAL_TASK_STATUSES = {"succeeded", "failed", "cancelled"}


def check_transition(table, kind, current, new):
    """Raise InvalidStateError unless ``current -> new`` is in ``table``."""
    if new not in table.get(current, ()):
        raise InvalidStateError(f"a {kind} that is {current} cannot become {new}")


ENGINE_OPTIONS = ("timeout", "retries", "retry_delay")


@dataclass(frozen=True)
class StepDef:
    """One step as defined (at submit time, for a task)."""

    name: str
    step_type: str
    depends_on: tuple = ()
    config: dict = field(default_factory=dict, compare=False, hash=False)
    seq: int = 0

    @property
    def timeout(self):
        return self.config.get("timeout")

    @property
    def max_attempts(self):
        return 1 + int(self.config.get("retries") or 0)

    def retry_delay(self, attempt):
        """Seconds before the retry that follows failed attempt number ``attempt`` (1-based)."""
        return float(self.config.get("retry_delay") or 0) * (2 ** (attempt - 1))


def parse_depends_on(value, step_name="?"):
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
        else:
            value = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInputError(f"step {step_name!r}: depends_on must be a list of step names, got {value!r}")
    return tuple(dict.fromkeys(value))


def parse_config(value, step_name="?"):
    """A JSON object (or empty); engine options are checked, the rest passed through."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    value = parse_json_object(value, f"step {step_name!r}: config")
    timeout, retries, delay = (value.get(k) for k in ENGINE_OPTIONS)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise InvalidInputError(f"step {step_name!r}: config.timeout must be a positive number of seconds")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise InvalidInputError(f"step {step_name!r}: config.retries must be a whole number >= 0")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0):
        raise InvalidInputError(f"step {step_name!r}: config.retry_delay must be a number of seconds >= 0")
    return value


def step_from_row(row):
    name = row["step_name"]
    return StepDef(name=name, step_type=row["step_type"], depends_on=parse_depends_on(row.get("depends_on"), name),
                   config=parse_config(row.get("config"), name), seq=int(row.get("seq") or 0))


class Dag:
    """A validated DAG of steps: topological order, successors, downstream sets."""

    def __init__(self, steps, label="pipeline"):
        steps = list(steps)
        if not steps:
            raise InvalidInputError(f"{label} has no steps")
        self.steps = {}
        for step in steps:
            if not isinstance(step.name, str) or not step.name:
                raise InvalidInputError(f"{label}: a step has an empty name")
            if step.name in self.steps:
                raise InvalidInputError(f"{label}: duplicate step name {step.name!r}")
            self.steps[step.name] = step
        self.successors = {name: [] for name in self.steps}
        for step in steps:
            for dep in step.depends_on:
                if dep == step.name:
                    raise InvalidInputError(f"{label}: step {step.name!r} depends on itself")
                if dep not in self.steps:
                    raise InvalidInputError(f"{label}: step {step.name!r} depends on unknown step {dep!r}")
                self.successors[dep].append(step.name)
        self.order = self._topological_order(label)
        self.position = {name: i for i, name in enumerate(self.order)}

    def _topological_order(self, label):
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

    def _a_cycle(self, acyclic):
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
    def from_rows(cls, rows, label):
        """The DAG of step rows (of pipeline_steps or pipeline_task_steps)."""
        return cls([step_from_row(r) for r in rows], label=label)

    def roots(self):
        return [n for n in self.order if not self.steps[n].depends_on]

    def downstream(self, names):
        """Every step reachable from ``names`` (breadth first), excluding ``names`` themselves."""
        start = set(names)
        seen, queue = set(), deque(start)
        while queue:
            for succ in self.successors[queue.popleft()]:
                if succ not in seen:
                    seen.add(succ)
                    queue.append(succ)
        return seen - start


@dataclass(frozen=True)
class CascadePlan:
    """What a human edit changes: every tuple is in topological order."""

    edited_outputs: tuple
    edited_inputs: tuple
    rerun: tuple        # steps reset and run again
    interrupted: tuple  # steps whose running handler must be stopped first
    pinned: dict        # step -> {dependency: output version it will be built from} (deps not re-run)


def cascade_plan(dag, updates, rerun_from=None, output_versions=None):
    """The affected set of a modify (SPEC §4), computed by BFS over the DAG.

    Re-run: the downstream steps of every edited output, every step whose input
    was edited (and its downstream: its new output changes theirs), and
    ``rerun_from`` with its downstream.  A step whose output was edited is not
    itself re-run: the person's output stands.
    """
    if not isinstance(updates, dict):
        raise InvalidInputError(f"updates must be a dict of step name -> {{'output'|'input': {{...}}}}, got "
                                f"{type(updates).__name__}")
    for name, edit in updates.items():
        if name not in dag.steps:
            raise InvalidInputError(f"updates names an unknown step {name!r}")
        if not isinstance(edit, dict) or not edit or set(edit) - {"output", "input"}:
            raise InvalidInputError(f"the update of step {name!r} must be {{'output': {{...}}}} and/or "
                                    f"{{'input': {{...}}}}, got {edit!r}")
        for kind, content in edit.items():
            if not isinstance(content, dict):
                raise InvalidInputError(f"the new {kind} of step {name!r} must be a JSON object, "
                                        f"got {type(content).__name__}")
            try:
                json.dumps(content)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"the new {kind} of step {name!r} is not JSON-serialisable: {exc}") from None
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
    versions = output_versions or {}
    pinned = {n: {d: versions.get(d) for d in dag.steps[n].depends_on if d not in affected} for n in rerun}
    return CascadePlan(edited_outputs=tuple(n for n in order if n in outputs),
                       edited_inputs=tuple(n for n in order if n in inputs - outputs),
                       rerun=rerun, interrupted=tuple(n for n in order if n in affected | outputs), pinned=pinned)
