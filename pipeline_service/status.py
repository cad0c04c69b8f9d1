"""The statuses of tasks and steps, and the one place that decides their transitions.

A status is a ``StrEnum`` member: it equals its string, so a status read from the
database compares equal to the member and a member is stored as its string.  The SQL
(``store/queries.sql``) names statuses only through placeholders filled from these
enums and the groups below (``{step:running}``, ``{steps:cancellable}``), so a new
status — like ``waiting`` — is added in this module and nowhere else: its member, its
rows in the transition tables (the groups follow from them).

Task transitions are decided by ``task_transition(current, action)``: every human
control, the first claim and the end of a task go through ``TASK_TRANSITIONS``.  Step
transitions are listed in ``STEP_TRANSITIONS``: the SQL's status guards are checked
against it by tests/test_status.py, the Python that changes a step's status in memory
by ``step_transition``.
"""
import enum

from .exceptions import InvalidStateError


class TaskStatus(enum.StrEnum):
    PENDING = "pending"      # submitted, no step claimed yet
    RUNNING = "running"
    PAUSED = "paused"        # ready steps held, nothing new starts
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(enum.StrEnum):
    PENDING = "pending"      # waiting for its dependencies (ready_at NULL) or ready to run (ready_at set)
    RUNNING = "running"      # claimed: owner, attempt (the claim token) and lease set
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # did not run in this run of its task: its `when` was false, or every dependency was skipped
    # (a condition's skip: its task goes on), or an upstream step failed (set as the task fails)
    SKIPPED = "skipped"
    # its handler asked to wait (engine/waiting.py): no slot, no lease, no owner; ready_at is
    # when to look again (its deadline, or now once what it waits for arrived), NULL: not before then
    WAITING = "waiting"


class ScheduleStatus(enum.StrEnum):
    ACTIVE = "active"        # ticks fire at next_fire_at
    PAUSED = "paused"        # no tick fires; resumed, it fires from the next tick after now
    FINISHED = "finished"    # a one-shot (at) that has fired: no tick left


class ScheduleAction(enum.Enum):
    """What changes a schedule's status (its value reads in a message: "can be <value>")."""

    PAUSE = "paused"
    RESUME = "resumed"
    FINISH = "finished"      # a one-shot's tick has fired (or was missed)


class TaskAction(enum.Enum):
    """What changes a task's status (its value reads in a message: "can be <value>").  Not a
    StrEnum: an action is never a status, and must not compare equal to one."""

    START = "started"        # the first claim of a root step (store/queries.sql: mark_tasks_started)
    PAUSE = "paused"
    RESUME = "resumed"
    CANCEL = "cancelled"
    MODIFY = "modified"      # edits and re-runs (a task not started yet also takes START: see Control.modify)
    SUCCEED = "succeeded"    # settled: every step succeeded
    FAIL = "failed"          # settled: a failed step blocks the rest


T, S = TaskStatus, StepStatus
# action -> {status it is allowed from: the status it leads to}; a status missing from an
# action's row refuses it; a status that maps to itself is a no-op that already holds
TASK_TRANSITIONS: dict[TaskAction, dict[TaskStatus, TaskStatus]] = {
    # only a pending task starts; any other keeps its status (paused or cancelled before
    # its first claim landed, resumed before it)
    TaskAction.START: {T.PENDING: T.RUNNING, **{s: s for s in T if s is not T.PENDING}},
    TaskAction.PAUSE: {T.PENDING: T.PAUSED, T.RUNNING: T.PAUSED, T.PAUSED: T.PAUSED},
    TaskAction.RESUME: {T.PAUSED: T.RUNNING, T.RUNNING: T.RUNNING, T.PENDING: T.PENDING},
    TaskAction.CANCEL: {T.PENDING: T.CANCELLED, T.RUNNING: T.CANCELLED, T.PAUSED: T.CANCELLED,
                        T.FAILED: T.CANCELLED, T.CANCELLED: T.CANCELLED},
    # a finished task runs again (its re-run steps); a paused one stays paused
    TaskAction.MODIFY: {T.PENDING: T.PENDING, T.RUNNING: T.RUNNING, T.PAUSED: T.PAUSED,
                        T.SUCCEEDED: T.RUNNING, T.FAILED: T.RUNNING},
    # settled: a running task, or one whose only step died before it started (recovery)
    TaskAction.SUCCEED: {T.RUNNING: T.SUCCEEDED, T.PENDING: T.SUCCEEDED},
    TaskAction.FAIL: {T.RUNNING: T.FAILED, T.PENDING: T.FAILED},
}

_A, _S = ScheduleAction, ScheduleStatus
# action -> {status it is allowed from: the status it leads to} (as TASK_TRANSITIONS)
SCHEDULE_TRANSITIONS: dict[ScheduleAction, dict[ScheduleStatus, ScheduleStatus]] = {
    _A.PAUSE: {_S.ACTIVE: _S.PAUSED, _S.PAUSED: _S.PAUSED},
    _A.RESUME: {_S.PAUSED: _S.ACTIVE, _S.ACTIVE: _S.ACTIVE},
    _A.FINISH: {_S.ACTIVE: _S.FINISHED},
}
del _A, _S

# step status -> the statuses it may become
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    # claimed; skipped (its `when` was false, its dependencies were all skipped, or its task
    # fails); cancelled; succeeded by an edited output; pending again when a re-run resets it
    S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED, S.SUCCEEDED, S.PENDING}),
    # its outcome; pending: a retry, a lost worker, a hand-back or a re-run; cancelled
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.PENDING, S.CANCELLED, S.WAITING}),
    # woken (its time came, or what it waits for arrived: ready again to be looked at) or
    # re-run; cancelled; succeeded by an edited output
    S.WAITING: frozenset({S.PENDING, S.CANCELLED, S.SUCCEEDED}),
    S.SUCCEEDED: frozenset({S.PENDING, S.SUCCEEDED}),   # re-run; edited output
    S.FAILED: frozenset({S.PENDING, S.SUCCEEDED}),      # re-run; edited output
    # re-run (or its failed upstream runs again); edited output; cancelled (only the skip of a
    # failed upstream: a condition's skip is finished, and a cancel leaves it as it is)
    S.SKIPPED: frozenset({S.PENDING, S.SUCCEEDED, S.CANCELLED}),
    S.CANCELLED: frozenset(),                           # terminal, like its task
}

TASK_STATUSES = tuple(TaskStatus)
TERMINAL_TASK_STATUSES = frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED})
# task statuses in which steps run: a step put back (retry, recovery, hand-back) is ready again at once
ACTIVE_TASK_STATUSES = frozenset({T.PENDING, T.RUNNING})
# a step done in a task that succeeds: it succeeded, or it was skipped by a condition
DONE_STEPS = frozenset({S.SUCCEEDED, S.SKIPPED})
# the steps a cancel marks cancelled (store/queries.sql: cancel_unfinished_steps)
CANCELLABLE_STEPS = frozenset(s for s in StepStatus if S.CANCELLED in STEP_TRANSITIONS[s])
# the sets of step statuses the SQL names, as {steps:<name>}
# steps that keep their task going although no step is ready: one runs, or waits for its time,
# a signal or a child task (a task with one is never settled)
IN_FLIGHT_STEPS = frozenset({S.RUNNING, S.WAITING})
STEP_STATUS_GROUPS: dict[str, frozenset[StepStatus]] = {
    "cancellable": CANCELLABLE_STEPS,
    "in_flight": IN_FLIGHT_STEPS,
    # the steps that keep a task from succeeding: a task whose steps all succeeded or were skipped succeeds
    "incomplete": frozenset(s for s in StepStatus if s not in DONE_STEPS),
}
# the sets of task statuses the SQL names, as {tasks:<name>}: a purge deletes only finished tasks
TASK_STATUS_GROUPS: dict[str, frozenset[TaskStatus]] = {
    "finished": TERMINAL_TASK_STATUSES,
}
del T, S


def task_transition(current: str, action: TaskAction, task_id: str | None = None) -> TaskStatus:
    """The status a task that is ``current`` has after ``action`` (``current`` itself: the
    action already holds, a no-op), or an InvalidStateError if ``current`` refuses it."""
    new = TASK_TRANSITIONS[action].get(TaskStatus(current))
    if new is None:
        subject = "the task" if task_id is None else f"task {task_id!r}"
        raise InvalidStateError(f"{subject} is {current}: a {current} task cannot be {action.value}")
    return new


def schedule_transition(current: str, action: ScheduleAction, schedule_id: str | None = None) -> ScheduleStatus:
    """The status a schedule that is ``current`` has after ``action`` (``current``: a no-op), or
    an InvalidStateError (a finished one-shot is neither paused nor resumed)."""
    new = SCHEDULE_TRANSITIONS[action].get(ScheduleStatus(current))
    if new is None:
        subject = "the schedule" if schedule_id is None else f"schedule {schedule_id!r}"
        raise InvalidStateError(f"{subject} is {current}: a {current} schedule cannot be {action.value}")
    return new


def step_transition(current: str, new: StepStatus) -> StepStatus:
    """``new`` if a step that is ``current`` may become it, else an InvalidStateError."""
    if new not in STEP_TRANSITIONS[StepStatus(current)]:
        raise InvalidStateError(f"a step that is {current} cannot become {new}")
    return new

