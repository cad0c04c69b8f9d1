"""Conditions (`when`) and templated configs, on MariaDB and SQLite (docs/SEMANTICS.md, "Conditions and templates")."""
import pytest

from pipeline_service import InvalidInputError, PipelineService
from pipeline_service.engine.progress import WHOLE_TASK_STEPS


def recorder(calls, fail=()):
    async def handler(tenant_id, task_id, step_name, input_data, config):
        calls.append({"step": step_name, "input": input_data, "config": config})
        if step_name in fail:
            raise RuntimeError(f"{step_name} breaks")
        return {"by": step_name, "score": len(calls)}
    return handler


async def step_until_idle(stepper, limit=30):
    for _ in range(limit):
        if not (await stepper.executor.run_once()).claims:
            return
    raise AssertionError("still claiming")


def statuses(detail):
    return {s["step_name"]: s["status"] for s in detail["steps"]}


#        a
#       / \
#      b   c        b: when params.b     c: when params.c
#      |   |
#      d   e
#       \ /
#        f
def matrix_steps(step_type):
    return [
        {"step_name": "a", "step_type": step_type},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"], "config": {"when": "params.b"}},
        {"step_name": "c", "step_type": step_type, "depends_on": ["a"], "config": {"when": "params.c"}},
        {"step_name": "d", "step_type": step_type, "depends_on": ["b"]},
        {"step_name": "e", "step_type": step_type, "depends_on": ["c"]},
        {"step_name": "f", "step_type": step_type, "depends_on": ["d", "e"], "config": {
            "from": "{{ upstream | list | sort | join(',') }}", "d_ran": "{{ upstream.d is defined }}"}},
    ]


@pytest.mark.parametrize("b, c, expected", [
    (True, True, dict(a="succeeded", b="succeeded", c="succeeded", d="succeeded", e="succeeded", f="succeeded")),
    (False, True, dict(a="succeeded", b="skipped", c="succeeded", d="skipped", e="succeeded", f="succeeded")),
    (True, False, dict(a="succeeded", b="succeeded", c="skipped", d="succeeded", e="skipped", f="succeeded")),
    (False, False, dict(a="succeeded", b="skipped", c="skipped", d="skipped", e="skipped", f="skipped")),
])
async def test_when_matrix_skips_propagate_only_through_all_skipped_dependencies(stepper, tenant, pipeline_id,
                                                                                 step_type, b, c, expected):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, matrix_steps(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "matrix", {"b": b, "c": c})
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert statuses(detail) == expected
    assert detail["status"] == "succeeded" and detail["error"] is None  # skips are not failures
    assert detail["progress"]["skipped"] == list(expected.values()).count("skipped")
    assert sorted(call["step"] for call in calls) == sorted(n for n, s in expected.items() if s == "succeeded")
    if expected["f"] == "succeeded":  # a skipped dependency made no output: f's upstream has none of it
        upstream = next(call["input"]["upstream"] for call in calls if call["step"] == "f")
        assert set(upstream) == {n for n in ("d", "e") if expected[n] == "succeeded"}
        config = next(call["config"] for call in calls if call["step"] == "f")
        assert config == {"from": ",".join(n for n in ("d", "e") if expected[n] == "succeeded"),
                          "d_ran": expected["d"] == "succeeded"}
    for name, status in expected.items():  # a false condition keeps the input it was evaluated on
        node = await stepper.node(tenant, task["id"], name)
        if name in ("b", "c") and status == "skipped":
            assert node["input"]["params"] == {"b": b, "c": c} and node["output"] is None
        if name in ("d", "e", "f") and status == "skipped":
            assert node["input"] is None  # skipped for its dependencies: never given an input


async def test_the_when_matrix_is_the_same_for_a_large_task(stepper, tenant, pipeline_id, step_type):
    """A task larger than WHOLE_TASK_STEPS reads only the steps it touches: skips propagate all the same."""
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    filler = [{"step_name": f"x{i}", "step_type": step_type} for i in range(WHOLE_TASK_STEPS)]
    await stepper.define_pipeline(pipeline_id, matrix_steps(step_type) + filler)
    task = await stepper.submit(tenant, pipeline_id, "o", "large", {"b": False, "c": False})
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert {n: s for n, s in statuses(detail).items() if not n.startswith("x")} == dict(
        a="succeeded", b="skipped", c="skipped", d="skipped", e="skipped", f="skipped")
    assert detail["status"] == "succeeded"


async def test_a_root_whose_when_is_false_is_skipped_at_submit(service, tenant, pipeline_id, step_type):
    calls, events = [], []
    service.register_handler(step_type, recorder(calls))
    service.on("step.skipped", events.append)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"when": "params.mode == 'full'"}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
    ])
    task = await service.submit(tenant, pipeline_id, "o", "nothing to do", {"mode": "quick"})
    assert task["status"] == "succeeded"  # every step was skipped: the task has nothing to run
    assert task["progress"] == {"total": 2, "succeeded": 0, "running": 0, "waiting": 0, "failed": 0, "skipped": 2}
    detail = await service.wait(tenant, task["id"])
    assert detail["status"] == "succeeded" and statuses(detail) == {"a": "skipped", "b": "skipped"}
    assert calls == []
    ran = await service.submit(tenant, pipeline_id, "o", "full", {"mode": "full"})
    assert ran["status"] == "pending"
    assert statuses(await service.wait(tenant, ran["id"])) == {"a": "succeeded", "b": "succeeded"}
    await service.events.drain()
    assert [(e["task_id"], e["step_name"], e["reason"]) for e in events] == [
        (task["id"], "a", "its when is false"), (task["id"], "b", "every dependency was skipped")]


async def test_a_failure_beside_a_skip_fails_the_task_and_a_fix_runs_the_rest(stepper, tenant, pipeline_id,
                                                                              step_type):
    """f waits on d (skipped by a condition) and e (failed): it is skipped as the task fails; an edit
    of e's output runs f; cancelling a failed task leaves a condition's skip as it is."""
    calls = []
    stepper.register_handler(step_type, recorder(calls, fail={"e"}))
    await stepper.define_pipeline(pipeline_id, matrix_steps(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "fails", {"b": False, "c": True})
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "failed" and "step 'e' failed" in detail["error"]
    assert statuses(detail) == dict(a="succeeded", b="skipped", c="succeeded", d="skipped", e="failed", f="skipped")
    await stepper.modify(tenant, task["id"], {"e": {"output": {"by": "a person"}}})
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "succeeded"
    assert statuses(detail) == dict(a="succeeded", b="skipped", c="succeeded", d="skipped", e="succeeded",
                                    f="succeeded")
    assert calls[-1]["step"] == "f" and calls[-1]["input"]["upstream"] == {"e": {"by": "a person"}}

    again = await stepper.submit(tenant, pipeline_id, "o", "fails again", {"b": False, "c": True})
    await step_until_idle(stepper)
    await stepper.cancel(tenant, again["id"])
    assert statuses(await stepper.detail(tenant, again["id"])) == dict(
        a="succeeded", b="skipped", c="succeeded", d="skipped", e="failed", f="cancelled")


async def test_a_rerun_of_another_branch_of_a_failed_task_does_not_run_what_its_failure_blocked(
        stepper, tenant, pipeline_id, step_type):
    """j waits on x (failed) through y (skipped as the task failed) and on z: re-running z must not
    run j (y was skipped by a failure, not by a condition)."""
    calls = []
    stepper.register_handler(step_type, recorder(calls, fail={"x"}))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "x", "step_type": step_type},
        {"step_name": "y", "step_type": step_type, "depends_on": ["x"]},
        {"step_name": "z", "step_type": step_type},
        {"step_name": "j", "step_type": step_type, "depends_on": ["y", "z"]},
    ])
    task = await stepper.submit(tenant, pipeline_id, "o", "blocked")
    await step_until_idle(stepper)
    assert statuses(await stepper.detail(tenant, task["id"])) == dict(x="failed", y="skipped", z="succeeded",
                                                                     j="skipped")
    await stepper.modify(tenant, task["id"], {}, rerun_from="z")
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "failed" and "j" not in [c["step"] for c in calls]
    assert statuses(detail) == dict(x="failed", y="skipped", z="succeeded", j="skipped")


async def test_templated_config_is_rendered_kept_with_the_input_and_given_to_the_handler(stepper, tenant,
                                                                                       pipeline_id, step_type):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"greeting": "hello {{ params.name }}"}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"], "config": {
            "score": "{{ upstream.a.score * 10 }}", "who": ["{{ upstream.a.by }}", "fixed"],
            "nested": {"text": "{{ params.name | upper }}!"}, "plain": "no template", "retries": 0}},
    ])
    task = await stepper.submit(tenant, pipeline_id, "o", "templates", {"name": "{{ 7 * 7 }} ada"})
    await step_until_idle(stepper)
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
    # a value is data: the template inside the param is not rendered again
    assert calls[0]["config"] == {"greeting": "hello {{ 7 * 7 }} ada"}
    expected = {"score": 10, "who": ["a", "fixed"], "nested": {"text": "{{ 7 * 7 }} ADA!"}, "plain": "no template",
                "retries": 0}
    assert calls[1]["config"] == expected
    assert set(calls[1]["input"]) == {"params", "upstream"}  # the handler's input is as before
    node = await stepper.node(tenant, task["id"], "b")
    assert node["input"]["config"] == expected  # kept with the input: visible and reproducible


@pytest.mark.parametrize("template, message", [
    ("{{ upstream.a.nope }}", "has no attribute 'nope'"),
    ("x {{ params.missing }}", "has no attribute 'missing'"),
    ("{{ params.__class__ }}", "unsafe"),
    ("{{ 'x' * 10000000 }}", "at most 100000"),
])
async def test_a_template_that_cannot_be_rendered_fails_the_attempt_clearly(stepper, tenant, pipeline_id,
                                                                              step_type, template, message):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"],
         "config": {"value": template, "retries": 1}},
    ])
    task = await stepper.submit(tenant, pipeline_id, "o", "bad template")
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    b = next(s for s in detail["steps"] if s["step_name"] == "b")
    assert detail["status"] == "failed" and b["status"] == "failed" and b["attempt"] == 2  # retried, as any attempt
    assert "config.value" in b["error"] and message in b["error"]
    assert [c["step"] for c in calls] == ["a"]  # the handler never ran with a half-rendered config


async def test_a_when_that_cannot_be_evaluated_fails_the_attempt(stepper, tenant, pipeline_id, step_type):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"when": "params.level > 3"}}])
    task = await stepper.submit(tenant, pipeline_id, "o", "no level")
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    assert detail["status"] == "failed" and "when 'params.level > 3'" in detail["error"]
    assert "level" in detail["error"] and calls == []


@pytest.mark.parametrize("config, message", [
    ({"when": "params.x =="}, "config.when is not a valid expression"),
    ({"when": "{{ params.x }}"}, "written without {{ }}"),
    ({"when": 3}, "config.when must be an expression"),
    ({"when": ""}, "config.when must be an expression"),
    ({"text": "{{ params.x "}, "config.text is not a valid template"),
    ({"list": ["ok", {"deep": "{% if %}"}]}, "config.list[1].deep is not a valid template"),
])
async def test_bad_conditions_and_templates_are_refused_at_define_time(service, pipeline_id, step_type, config,
                                                                       message):
    with pytest.raises(InvalidInputError, match=message.replace("{", r"\{").replace("[", r"\[")):
        await service.define_pipeline(pipeline_id, [{"step_name": "s", "step_type": step_type, "config": config}])


async def test_an_edited_input_renders_the_config_and_never_takes_one_from_the_edit(stepper, tenant, pipeline_id,
                                                                                     step_type):
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"text": "{{ params.name }}"}}])
    task = await stepper.submit(tenant, pipeline_id, "o", "edit", {"name": "first"})
    await step_until_idle(stepper)
    await stepper.modify(tenant, task["id"], {"a": {"input": {
        "params": {"name": "second"}, "upstream": {}, "config": {"text": "chosen by hand"}}}})
    await step_until_idle(stepper)
    assert [c["config"] for c in calls] == [{"text": "first"}, {"text": "second"}]
    assert (await stepper.node(tenant, task["id"], "a"))["input"]["config"] == {"text": "second"}
    with pytest.raises(InvalidInputError, match="does not render its config"):
        await stepper.modify(tenant, task["id"], {"a": {"input": {"params": {}, "upstream": {}}}})


def test_templates_are_checked_for_every_step_type(tmp_path):
    """The checks are the definition's: no service or handler is needed to refuse a bad one."""
    service = PipelineService(f"sqlite:///{tmp_path / 'x.db'}", autostart=False)
    from pipeline_service.dag import definition_rows
    with pytest.raises(InvalidInputError, match="config.when"):
        definition_rows("p", [{"step_name": "s", "step_type": "http", "config": {"when": "1 +"}}])
    assert service.handlers.get("http") is not None


async def test_a_definition_written_into_the_tables_with_a_bad_template_fails_its_attempt(stepper, tenant,
                                                                                          pipeline_id, step_type):
    """pipeline_core's pages write pipeline_steps directly: a task is read as it is, and the bad
    template or condition fails the step's attempt, saying why (nothing else breaks)."""
    from pipeline_service.ids import new_id
    calls = []
    stepper.register_handler(step_type, recorder(calls))
    await stepper.define_pipeline(pipeline_id, [{"step_name": "a", "step_type": step_type}])
    async with stepper.storage.transaction() as tx:
        await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id=pipeline_id, step_name="b",
                         step_type=step_type, depends_on="[]", config='{"text": "{{ params.x "}', seq=2)
        await tx.execute("insert_pipeline_step", id=new_id(), pipeline_id=pipeline_id, step_name="c",
                         step_type=step_type, depends_on="[]", config='{"when": "params.x =="}', seq=3)
    stepper.caches.definitions.clear()
    task = await stepper.submit(tenant, pipeline_id, "o", "written by hand")
    await step_until_idle(stepper)
    detail = await stepper.detail(tenant, task["id"])
    errors = {s["step_name"]: s["error"] for s in detail["steps"]}
    assert statuses(detail) == {"a": "succeeded", "b": "failed", "c": "failed"}
    assert "config.text is not a valid template" in errors["b"] and "when 'params.x =='" in errors["c"]
    assert [c["step"] for c in calls] == ["a"]
