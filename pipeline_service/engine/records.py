"""The plain records passed between the engine's components."""
from dataclasses import dataclass
from typing import Any

from ..dag import Dag, StepDef
from ..json_objects import from_json
from ..store.packing import Stored
from ..waits import Wait


@dataclass(frozen=True)
class ContentOptions:
    """The service's options for artifact contents: the largest a handler's output or a
    person's edit may be (bytes of JSON), and above which size it is stored compressed (None: never)."""

    max_bytes: int
    compress_above: int | None


@dataclass(frozen=True)
class TaskPlan:
    """What never changes in a task after submit: its DAG, its step row ids and its params."""

    dag: Dag
    ids: dict[str, str]  # step name -> step row id
    params_text: str     # params as stored: each input made from the plan decodes its own copy
    # (parent task id, step name): the delegate step whose child this task is (engine/waiting.py)
    parent: tuple[str, str] | None = None

    @property
    def size(self) -> int:
        return len(self.dag.steps)

    @property
    def weight(self) -> int:
        """What the plan cache counts it as: its steps, and its params as steps of ~600 bytes each."""
        return len(self.dag.steps) + len(self.params_text) // 600


@dataclass(frozen=True)
class Claim:
    """A step this process has claimed: the claim token is (owner, attempt)."""

    id: str
    tenant_id: str
    task_id: str
    step_name: str
    attempt: int       # ever made, this one included: with owner, the claim token
    attempt_base: int  # attempts made before the step's last re-run
    owner: str
    input_version: int
    # a step woken from a wait: what it waited for and what woke it (JSON text as stored), see waits.py
    waiting_for: str | None = None
    woken_by: str | None = None

    @property
    def run_attempt(self) -> int:
        """This attempt's number within the current run (1 = first), for the retry budget."""
        return self.attempt - self.attempt_base

    def __hash__(self) -> int:
        # the executor keys its sets and maps by claim a dozen times per step: the row id alone
        # (equal claims have equal ids) costs a fraction of hashing every field
        return hash(self.id)


@dataclass(frozen=True)
class CheckedOutput:
    """A handler's result as it is stored: its JSON text, and the row's form of that text
    (store/packing.py), made when the handler returned, outside the recording transaction."""

    text: str
    stored: Stored


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``output_text`` (succeeded: the output's JSON text as checked,
    serialised once and stored as it is; ``output_stored``: its row's form, if made already),
    or ``error`` with a ``retry_delay`` (another attempt
    follows) or without one (the step failed), or ``wait`` (the step waits: a ``waits.Wait``);
    ``trace``: the traceback of what the handler raised, if it raised (bounded: see
    executor.MAX_TRACE_CHARS)."""

    claim: Claim
    output_text: str | None = None
    output_stored: Stored | None = None
    error: str | None = None
    retry_delay: float | None = None
    trace: str | None = None
    wait: Wait | None = None

    @property
    def succeeded(self) -> bool:
        return self.output_text is not None

    @property
    def output(self) -> dict[str, Any] | None:
        """The output, decoded afresh (the engine itself needs only its text: no decode per step)."""
        return None if self.output_text is None else from_json(self.output_text)


@dataclass(frozen=True)
class StartedStep:
    """What a claimed step runs with: its definition and its input."""

    step: StepDef
    input: dict[str, Any]


@dataclass(frozen=True)
class InputRecipe:
    """What a step's input is made from (engine/inputs.py): ``lineage`` ({upstream step: output
    version}) and ``text`` the extra fields stored with it (or None) — or, when ``lineage`` is
    None, ``text`` the whole input stored verbatim (a person's edit, or an older copy)."""

    text: str | None
    lineage: dict[str, int] | None


@dataclass(frozen=True)
class NewTask:
    """A task to create (checked arguments): what a submit and a schedule's tick hand to
    ``Tasks.write_task``.  A key or a tick is unique per tenant in the database."""

    tenant_id: str
    pipeline_id: str
    owner_id: str
    title: str
    params: dict[str, Any]
    priority: int
    idempotency_key: str | None = None  # the submitter's: one task per tenant and key
    schedule_id: str | None = None      # the schedule whose tick this is ...
    scheduled_for: int | None = None    # ... and the tick (epoch ms): one task per schedule and tick
    parent: tuple[str, str] | None = None  # (task id, step name): the delegate step it is the child of
