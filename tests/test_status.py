"""The status model (status.py) and the SQL file (store/queries.sql) that names its statuses.

Every status literal of the SQL belongs to the enums; the SQL's step-status changes are the
transitions of STEP_TRANSITIONS; each counter is computed in one place; the engine keeps
claim tokens and output versions right when one round or one group commit mixes several.
"""
import re

import pytest

from pipeline_service import InvalidStateError
from pipeline_service.status import (ACTIVE_TASK_STATUSES, CANCELLABLE_STEPS, STEP_STATUS_GROUPS,
                                     STEP_TRANSITIONS, TASK_TRANSITIONS, ScheduleStatus, StepStatus, TaskAction,
                                     TaskStatus,
                                     step_transition, task_transition)
from pipeline_service.store import queries

SQL_TEXT = queries.SQL_FILE.read_text(encoding="utf-8")
LITERAL = re.compile(r"'([^']*)'")
STATUSES = {str(s) for s in TaskStatus} | {str(s) for s in StepStatus} | {str(s) for s in ScheduleStatus}


def sql_lines(text):
    """The statement and fragment lines of a .sql text (comments dropped, as the parser does)."""
    return [line for line in text.splitlines() if line.strip() and not line.strip().startswith("--")]


def literals_outside_the_enums(statements):
    """{statement name: quoted literals that are no status of the enums}."""
    found = {}
    for name, sql in statements.items():
        for text in (sql.values() if isinstance(sql, dict) else [sql]):
            bad = set(LITERAL.findall(text)) - STATUSES
            if bad:
                found[name] = bad
    return found


def every_variant():
    for name, sql in queries.STATEMENTS.items():
        for dialect, text in (sql.items() if isinstance(sql, dict) else [(None, sql)]):
            yield name, dialect, text


# ---- the SQL's statuses come from the enums ----

def test_the_sql_file_writes_no_status_literal_only_placeholders():
    """A status in queries.sql is a placeholder ({step:running}) filled from the enums, never a
    quoted literal: adding a status (the next wave's `waiting` step) touches status.py alone."""
    assert not [line for line in sql_lines(SQL_TEXT) if "'" in line]
    named = re.findall(r"\{(task|step|steps|schedule):(\w+)\}", SQL_TEXT)
    assert {kind for kind, _ in named} == {"task", "step", "steps", "schedule"}
    enums = {"task": TaskStatus, "step": StepStatus, "schedule": ScheduleStatus}
    for kind, name in named:
        known = STEP_STATUS_GROUPS if kind == "steps" else {str(s) for s in enums[kind]}
        assert name in known, (kind, name)


def test_every_status_literal_of_the_parsed_sql_belongs_to_the_enums():
    assert literals_outside_the_enums(queries.STATEMENTS) == {}
    # the check itself sees a status the enums do not know (a typo, or a new status not added to status.py)
    assert literals_outside_the_enums({"x": "SELECT 1 WHERE status IN ('pending', 'parked')"}) == {"x": {"parked"}}
    groups = re.search(r"status IN \(([^)]*)\)", queries.statement("cancel_unfinished_steps", "mysql")).group(1)
    assert set(LITERAL.findall(groups)) == {str(s) for s in CANCELLABLE_STEPS} == {"pending", "running", "skipped", "waiting"}


@pytest.mark.parametrize("text, message", [
    ("-- name: a\nSELECT 1 WHERE status = {step:waitng}", "'waitng' is not a StepStatus"),
    ("-- name: a\nSELECT 1 WHERE status = {task:skipped}", "'skipped' is not a TaskStatus"),
    ("-- name: a\nSELECT 1 WHERE status IN ({steps:nope})", "no step status group 'nope'"),
    ("-- name: a\nSELECT {{cols}} FROM t", "unknown fragment 'cols'"),
    ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2", "'a' is defined twice"),
    ("-- name: a :mysql\nSELECT 1", "has variants for ['mysql'] only"),
    ("-- name: a :oracle\nSELECT 1\n", "unknown dialect 'oracle'"),
    ("-- name: a\n-- only a comment\n", "'a' is empty"),
    ("SELECT 1\n-- name: a\nSELECT 2", "queries.sql:1: SQL before the first"),
])
def test_a_malformed_sql_file_is_refused_at_parse_time_with_its_place(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        queries.parse(text)


def test_parsing_expands_fragments_and_statuses_and_drops_comments():
    parsed = queries.parse("-- fragment: cols\nid, status\n-- name: a :mysql\n-- says why ${x}$\n"
                           "SELECT {{cols}} FROM t WHERE status IN ({steps:cancellable}) AND id = ${id}$\n"
                           "-- name: a :sqlite\nSELECT {{cols}} FROM t WHERE status = {task:paused}\n")
    assert parsed == {"a": {
        "mysql": "SELECT id, status FROM t WHERE status IN ('pending', 'running', 'skipped', 'waiting') AND id = ${id}$",
        "sqlite": "SELECT id, status FROM t WHERE status = 'paused'"}}
    assert not [n for n, _, text in every_variant() if "{{" in text or re.search(r"\{(task|step|steps):", text)]
    with pytest.raises(KeyError, match="no SQL statement named 'nope'"):
        queries.statement("nope", "mysql")


def test_an_encoded_parameter_gives_its_statement_a_variant_per_dialect():
    # on MySQL long text and bytes go in base64, decoded by the statement (store/sqlor_adapter.py)
    parsed = queries.parse("-- name: a\nINSERT INTO t VALUES (${id}$, {text:body}, {bytes:blob})\n"
                           "-- name: b :galera\nUPDATE t SET body = {text:body}\n"
                           "-- name: b :mysql\nSELECT 1\n-- name: b :sqlite\nSELECT {text:body}\n")
    assert parsed == {
        "a": {"mysql": "INSERT INTO t VALUES (${id}$, CONVERT(FROM_BASE64(${body}$) USING utf8mb4), "
                       "FROM_BASE64(${blob}$))",
              "sqlite": "INSERT INTO t VALUES (${id}$, ${body}$, ${blob}$)"},
        "b": {"galera": "UPDATE t SET body = CONVERT(FROM_BASE64(${body}$) USING utf8mb4)", "mysql": "SELECT 1",
              "sqlite": "SELECT ${body}$"}}
    assert not [n for n, _, text in every_variant() if re.search(r"\{(text|bytes):", text)]


def test_the_sql_file_ships_in_the_wheel():
    pyproject = (queries.SQL_FILE.parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"pipeline_service\.store" = \[[^]]*"\*\.sql"', pyproject)


# ---- the SQL's transitions are the tables' ----

SET_STEP_STATUS = re.compile(r"UPDATE pipeline_task_steps SET status = '(\w+)'")
# the human-control statements without a status guard: the Python checks each step's transition
# (Control.modify: step_transition) before it writes them
UNGUARDED = {"reset_steps", "set_manual_output"}


def test_every_step_status_the_sql_sets_is_a_transition_of_the_table():
    seen = set()
    for name, _, text in every_variant():
        target = SET_STEP_STATUS.search(text)
        if target is None:
            continue
        where = text[text.rfind("WHERE"):]  # the statement's own (a SET may hold a sub-select)
        guard = re.search(r"\bstatus (?:= '(\w+)'|IN \(([^)]*)\))", where)
        if guard is None:
            assert name in UNGUARDED, name
            continue
        sources = [guard.group(1)] if guard.group(1) else LITERAL.findall(guard.group(2))
        for source in sources:
            assert StepStatus(target.group(1)) in STEP_TRANSITIONS[StepStatus(source)], (name, source)
            seen.add((source, target.group(1)))
    assert {("pending", "running"), ("running", "succeeded"), ("pending", "skipped"), ("skipped", "cancelled")} <= seen


def test_the_first_claim_starts_a_task_as_the_start_action_says():
    changes = {(str(a), str(b)) for a, b in TASK_TRANSITIONS[TaskAction.START].items() if a != b}
    for dialect in ("mysql", "sqlite"):
        case = re.search(r"CASE WHEN status = '(\w+)' THEN '(\w+)' ELSE status END",
                         queries.statement("mark_tasks_started", dialect))
        assert {case.groups()} == changes == {("pending", "running")}


# ---- one function decides each task transition ----

@pytest.mark.parametrize("action, current, new", [
    (TaskAction.PAUSE, "running", "paused"), (TaskAction.PAUSE, "pending", "paused"),
    (TaskAction.PAUSE, "paused", "paused"),
    (TaskAction.RESUME, "paused", "running"), (TaskAction.RESUME, "running", "running"),
    (TaskAction.RESUME, "pending", "pending"),
    (TaskAction.CANCEL, "failed", "cancelled"), (TaskAction.CANCEL, "cancelled", "cancelled"),
    (TaskAction.MODIFY, "succeeded", "running"), (TaskAction.MODIFY, "failed", "running"),
    (TaskAction.MODIFY, "paused", "paused"), (TaskAction.MODIFY, "pending", "pending"),
    (TaskAction.START, "pending", "running"), (TaskAction.START, "paused", "paused"),
    (TaskAction.SUCCEED, "running", "succeeded"), (TaskAction.FAIL, "pending", "failed"),
])
def test_task_transition_gives_the_new_status(action, current, new):
    assert task_transition(current, action) == new
    assert isinstance(task_transition(current, action), TaskStatus)


@pytest.mark.parametrize("action, current, message", [
    (TaskAction.RESUME, "succeeded", "task 'x' is succeeded: a succeeded task cannot be resumed"),
    (TaskAction.RESUME, "cancelled", "task 'x' is cancelled: a cancelled task cannot be resumed"),
    (TaskAction.RESUME, "failed", "task 'x' is failed: a failed task cannot be resumed"),
    (TaskAction.PAUSE, "failed", "task 'x' is failed: a failed task cannot be paused"),
    (TaskAction.CANCEL, "succeeded", "task 'x' is succeeded: a succeeded task cannot be cancelled"),
    (TaskAction.MODIFY, "cancelled", "task 'x' is cancelled: a cancelled task cannot be modified"),
    (TaskAction.SUCCEED, "paused", "task 'x' is paused: a paused task cannot be succeeded"),
])
def test_task_transition_refuses_with_a_clear_message(action, current, message):
    with pytest.raises(InvalidStateError, match=f"^{re.escape(message)}$"):
        task_transition(current, action, "x")


def test_the_tables_cover_every_status_and_cancelled_is_terminal():
    assert set(STEP_TRANSITIONS) == set(StepStatus)
    assert all(set(row) <= set(TaskStatus) and set(row.values()) <= set(TaskStatus)
               for row in TASK_TRANSITIONS.values())
    assert set(TASK_TRANSITIONS[TaskAction.START]) == set(TaskStatus)  # the SQL's CASE keeps any other
    assert not STEP_TRANSITIONS[StepStatus.CANCELLED]
    for action, row in TASK_TRANSITIONS.items():
        assert row.get(TaskStatus.CANCELLED) in (None, TaskStatus.CANCELLED), action
    assert ACTIVE_TASK_STATUSES == {"pending", "running"}
    assert TaskAction.CANCEL != "cancelled"  # an action is no status


def test_step_transition_checks_the_table():
    assert step_transition("running", StepStatus.PENDING) is StepStatus.PENDING
    assert step_transition("failed", StepStatus.SUCCEEDED) is StepStatus.SUCCEEDED
    with pytest.raises(InvalidStateError, match="^a step that is cancelled cannot become pending$"):
        step_transition("cancelled", StepStatus.PENDING)
    with pytest.raises(InvalidStateError, match="^a step that is succeeded cannot become failed$"):
        step_transition("succeeded", StepStatus.FAILED)


# ---- each counter is computed in one place ----

def test_counters_computed_in_python_are_stored_as_given():
    """attempt, output_version, input_version and crash_count: Python computes the next value and
    the SQL stores the parameter; attempt_base is moved in SQL only (Python only reads it)."""
    assignments = re.compile(r"\b(attempt|output_version|input_version|crash_count|attempt_base) = ([^,\n]+)")
    by_column = {}
    for name, _, text in every_variant():
        set_part = text[:text.rfind("WHERE")] if text.startswith("UPDATE") else ""
        for column, value in assignments.findall(set_part):
            by_column.setdefault(column, set()).add(value.strip())
    for column in ("attempt", "output_version", "input_version", "crash_count"):
        assert by_column[column] == {f"${{{column}}}$"}, column
    assert by_column["attempt_base"] == {"attempt_base + 1", "attempt"}


async def test_one_claim_round_of_steps_on_different_attempts_keeps_each_claim_token(
        stepper, tenant, pipeline_id, step_type):
    """The claim token (attempt) is computed in Python, stored as is: a round that claims a retry
    (attempt 2) and a first run (attempt 1) together records both outcomes."""
    failures = []

    async def handler(tenant_id, task_id, step_name, input_data, config):
        if input_data["params"]["flaky"] and not failures:
            failures.append(task_id)
            raise RuntimeError("first attempt breaks")
        return {"ok": True}

    stepper.handlers.register(step_type, handler)
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 1, "retry_delay": 0}}])
    flaky = await stepper.submit(tenant, pipeline_id, "o", "flaky", {"flaky": True})
    assert [o.retry_delay for o in (await stepper.executor.run_once()).outcomes] == [0]
    fresh = await stepper.submit(tenant, pipeline_id, "o", "fresh", {"flaky": False})
    both = await stepper.executor.run_once()
    assert sorted((c.task_id, c.attempt) for c in both.claims) == sorted([(flaky["id"], 2), (fresh["id"], 1)])
    assert all(o.error is None for o in both.outcomes)
    for task, attempt in ((flaky, 2), (fresh, 1)):
        detail = await stepper.detail(tenant, task["id"])
        assert detail["status"] == "succeeded", detail
        assert (detail["steps"][0]["attempt"], detail["steps"][0]["output_version"]) == (attempt, 1)


async def test_one_group_commit_of_different_output_versions_stores_each(stepper, tenant, pipeline_id, step_type):
    """The output version is computed in Python and stored as is: one finish that records a
    re-run (output 2) and a first run (output 1) gives each step the version of its artifact."""
    async def handler(tenant_id, task_id, step_name, input_data, config):
        return {"title": input_data["params"]["title"]}

    stepper.handlers.register(step_type, handler)
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    again = await stepper.submit(tenant, pipeline_id, "o", "again", {"title": "again"})
    await stepper.executor.run_once()
    await stepper.modify(tenant, again["id"], {}, rerun_from="a")
    first = await stepper.submit(tenant, pipeline_id, "o", "first", {"title": "first"})
    both = await stepper.executor.run_once()
    assert len(both.claims) == 2 and all(o.output is not None for o in both.outcomes)
    for task, version in ((again, 2), (first, 1)):
        step = (await stepper.detail(tenant, task["id"]))["steps"][0]
        assert (step["status"], step["output_version"]) == ("succeeded", version)
        node = await stepper.node(tenant, task["id"], "a")
        assert node["output"] == {"title": task["title"]}
        assert max(v["version"] for v in node["versions"] if v["kind"] == "output") == version
