"""The DAG and the handler registry, without a database (statuses: test_status.py)."""
import logging

import pytest

from pipeline_service import InvalidInputError
from pipeline_service.engine.handlers import HandlerRegistry
from pipeline_service.dag import Dag, StepDef, parse_config, parse_depends_on


def dag(*specs):
    return Dag([StepDef(name, "t", tuple(deps), {}, i) for i, (name, deps) in enumerate(specs)])


def test_topological_order_and_successors():
    d = dag(("d", ["b", "c"]), ("b", ["a"]), ("c", ["a"]), ("a", []))
    assert d.order.index("a") < d.order.index("b") < d.order.index("d")
    assert d.order.index("c") < d.order.index("d")
    assert sorted(d.successors["a"]) == ["b", "c"] and d.roots() == ["a"]


def test_downstream_is_breadth_first_reachability():
    d = dag(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", []), ("y", ["x", "c"]))
    assert d.downstream(["b"]) == {"c", "y"}
    assert d.downstream(["a", "x"]) == {"b", "c", "y"}
    assert d.downstream(["y"]) == set()


@pytest.mark.parametrize("specs, message", [
    ([], "has no steps"),
    ([("a", []), ("a", [])], "duplicate step name 'a'"),
    ([("a", ["zz"])], "step 'a' depends on unknown step 'zz'"),
    ([("a", ["a"])], "step 'a' depends on itself"),
    ([("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", [])], "cycle"),
])
def test_invalid_dags_name_the_steps(specs, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        dag(*specs)
    if message == "cycle":
        text = str(caught.value)
        assert all(n in text for n in "abc") and "'d'" not in text and " d " not in text


def test_depends_on_forms():
    assert parse_depends_on('["a", "b"]') == ("a", "b")
    assert parse_depends_on("a, b ,") == ("a", "b")
    assert parse_depends_on("") == () and parse_depends_on(None) == ()
    with pytest.raises(InvalidInputError):
        parse_depends_on("[1, 2]")


def test_config_engine_options_are_checked():
    assert parse_config('{"timeout": 2, "retries": 1, "model": "x"}')["model"] == "x"
    for bad in ('{"timeout": -1}', '{"retries": 1.5}', '{"retry_delay": "soon"}', "[1]", "{nope"):
        with pytest.raises(InvalidInputError):
            parse_config(bad)


def test_retry_delay_doubles():
    step = StepDef("a", "t", (), {"retries": 3, "retry_delay": 0.5})
    assert step.max_attempts == 4
    assert [step.retry_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_register_handler_validates_and_replacement_is_logged(caplog):
    registry = HandlerRegistry()
    with pytest.raises(InvalidInputError):
        registry.register("", lambda *a: {})
    with pytest.raises(InvalidInputError):
        registry.register("x-type", "not callable")
    assert registry.step_types() == []
    first, second = (lambda *a: {}), (lambda *a: {"v": 2})
    registry.register("x-type", first)
    with caplog.at_level(logging.INFO, logger="pipeline_service.engine.handlers"):
        registry.register("x-type", second)
    assert registry.get("x-type") is second and "replaced" in caplog.text
    registry.unregister("x-type")
    assert registry.get("x-type") is None and registry.step_types() == []


def test_cascade_plan_affected_sets():
    from pipeline_service.dag import cascade_plan
    d = dag(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["c"]), ("x", []), ("y", ["x"]))
    plan = cascade_plan(d, {"b": {"output": {"v": 1}}})
    assert plan.rerun == ("c", "d") and plan.edited_outputs == ("b",) and plan.interrupted == ("b", "c", "d")
    plan = cascade_plan(d, {"c": {"input": {"v": 1}}}, rerun_from="x")
    assert plan.rerun == ("c", "d", "x", "y")
    assert plan.edited_inputs == ("c",)
    plan = cascade_plan(d, {}, rerun_from="b")
    assert plan.rerun == ("b", "c", "d") and plan.edited_outputs == ()
    # an edited output stands: the step itself is not re-run even if upstream is
    plan = cascade_plan(d, {"c": {"output": {}}}, rerun_from="a")
    assert "c" not in plan.rerun and plan.rerun == ("a", "b", "d")


def test_cascade_plan_refuses_bad_updates():
    from pipeline_service.dag import cascade_plan
    d = dag(("a", []), ("b", ["a"]))
    for updates, rerun_from in (({"q": {"output": {}}}, None), ({}, "q"), ({"a": {"output": 3}}, None),
                                ({"a": {}}, None), ({}, None), ({"a": {"input": {"s": {1}}}}, None)):
        with pytest.raises(InvalidInputError):
            cascade_plan(d, updates, rerun_from)


def test_ids_never_start_with_a_dash(monkeypatch):
    import pipeline_service.ids as ids
    drawn = iter(["-starts-with-a-dash-xxyz", "_fine-but-underscore-xyz", "ok"])
    monkeypatch.setattr(ids.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert ids.new_id() == "_fine-but-underscore-"  # drawn again, and cut to 21 characters
    monkeypatch.undo()
    made = [ids.new_id() for _ in range(20_000)]
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")  # nanoid's
    assert all(len(i) == 21 and set(i) <= alphabet and not i.startswith("-") for i in made)
    assert len(set(made)) == len(made)
    assert set("".join(made)) == alphabet  # every character of the alphabet is drawn
