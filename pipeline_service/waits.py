"""What a handler returns to make its step wait: a ``Wait`` (docs/SEMANTICS.md, "Waiting steps").

A handler that returns a ``Wait`` instead of its output ends its attempt without ending
its step: the step becomes ``waiting`` — it holds no worker slot, no lease and no owner,
and it is only a row until what it waits for comes:

* ``Wait.timer(until)``: its time (epoch milliseconds) — a durable timer, found by the
  executor's probe;
* ``Wait.signal(choices, until, prompt)``: a signal (``pipeline_signal``) — a person's decision,
  one of ``choices`` when given; or its deadline, if one is given;
* ``Wait.task(pipeline_id, params, title)``: the end of a child task, which the engine
  submits in the same transaction that records the wait (same tenant and owner), so a
  child exists exactly when its parent's step waits for it;
  ``Wait.child(child_task_id)``: the same child again, after a look that found it unfinished.

Then the step is pending again and its handler is called once more (the same attempt),
with ``input["waited"]``: ``{"for": what it waited for (``stored()`` below),
"woken_by": the signal that came (``{"payload", "actor", "at"}``) or None,
"child": for a task wait, the child task (``{"task_id", "status", "error", "outputs"}``,
outputs of its sink steps)}``.  It decides: its output, a failure, or another ``Wait``.
A handler is so a plain function of its input and config; the engine knows only these
three kinds of wait.
"""
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .exceptions import InvalidInputError
from .ids import MAX_TITLE, check_id, check_text
from .json_objects import check_json_object

KINDS = ("timer", "signal", "task")
MAX_CHOICES = 100
MAX_PROMPT = 4000  # characters
MAX_UNTIL_MS = 253_402_300_799_000  # 9999-12-31: far past any real deadline, inside every column


def waiting_handler(fn: Callable) -> Callable:
    """Mark ``fn`` as a handler that waits without a slot (it returns a ``Wait``): the ``timeout``
    of its steps may then reach ``dag.MAX_WAIT_SECONDS`` instead of a handler's day."""
    fn.pipeline_waits = True  # type: ignore[attr-defined]
    return fn


def is_waiting_handler(fn: Callable) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "pipeline_waits", False) is True


def _until(value: object, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNTIL_MS:
        raise InvalidInputError(f"a wait's until must be a time in epoch milliseconds, got {value!r}")
    return value


@dataclass(frozen=True)
class Wait:
    """A step's wait, as a handler asks for it (build it with the class methods: they check it)."""

    kind: str
    until: int | None = None                  # epoch ms: wake then (a timer; a deadline of the others)
    choices: tuple[str, ...] | None = None    # signal: the decisions its payload may carry
    prompt: str | None = None                 # signal: what a person is asked (shown with the step)
    pipeline_id: str | None = None            # task: the child to submit ...
    params: dict[str, Any] | None = None
    title: str | None = None
    child_task_id: str | None = None          # ... or the child already submitted

    @classmethod
    def timer(cls, until: int) -> "Wait":
        return cls("timer", until=_until(until, True))

    @classmethod
    def signal(cls, choices: list[str] | tuple[str, ...] | None = None, until: int | None = None,
               prompt: str | None = None) -> "Wait":
        if choices is not None:
            if (not isinstance(choices, (list, tuple)) or not choices or len(choices) > MAX_CHOICES
                    or not all(isinstance(c, str) and c.strip() and len(c) <= 64 for c in choices)
                    or len(set(choices)) != len(choices)):
                raise InvalidInputError(f"choices must be a list of 1 to {MAX_CHOICES} distinct non-empty "
                                        f"strings (at most 64 characters each), got {choices!r}")
            choices = tuple(choices)
        if prompt is not None:
            check_text(prompt, "prompt", MAX_PROMPT)
        return cls("signal", until=_until(until, False), choices=choices, prompt=prompt)

    @classmethod
    def task(cls, pipeline_id: str, params: dict[str, Any] | None = None, title: str | None = None) -> "Wait":
        check_id(pipeline_id, "pipeline_id")
        params = {} if params is None else check_json_object(params, "params")
        if title is not None:
            check_text(title, "title", MAX_TITLE)
        return cls("task", pipeline_id=pipeline_id, params=params, title=title)

    @classmethod
    def child(cls, child_task_id: str) -> "Wait":
        return cls("task", child_task_id=check_id(child_task_id, "child_task_id"))

    def checked(self) -> "Wait":
        """This wait, checked as its class method checks it (a handler may have built it directly)."""
        if self.kind == "timer":
            return Wait.timer(self.until)  # type: ignore[arg-type]  # checked there
        if self.kind == "signal":
            return Wait.signal(self.choices, self.until, self.prompt)
        if self.kind == "task" and self.child_task_id is not None:
            return Wait.child(self.child_task_id)
        if self.kind == "task":
            return Wait.task(self.pipeline_id, self.params, self.title)  # type: ignore[arg-type]
        raise InvalidInputError(f"a wait's kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def submits(self) -> bool:
        """A task wait whose child is still to be submitted (with the wait's record)."""
        return self.kind == "task" and self.child_task_id is None

    def stored(self, child_task_id: str | None = None) -> dict[str, Any]:
        """What the step row keeps in ``waiting_for`` (and the handler reads back in
        ``input["waited"]["for"]``); ``child_task_id``: the child submitted with it."""
        stored: dict[str, Any] = {"kind": self.kind, "until": self.until}
        if self.kind == "signal":
            stored["choices"] = None if self.choices is None else list(self.choices)
            stored["prompt"] = self.prompt
        if self.kind == "task":
            stored["child_task_id"] = child_task_id or self.child_task_id
        return stored
