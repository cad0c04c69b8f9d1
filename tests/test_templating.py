"""templating.py on its own: what a template renders to, and how a shell command gets its values."""
import subprocess

import pytest

from pipeline_service.templating import TemplateProblem, evaluate_condition, render_config


@pytest.mark.parametrize("template, rendered", [
    ("{{ params.list }}", [1, "two"]),            # one expression and nothing else: its value as it is
    ("{{ params.n * 2 }}", 6),
    ("{{- params.list -}}", '[1, "two"]'),        # whitespace control: text, as Jinja reads it
    (" {{ params.list }}", ' [1, "two"]'),        # anything around it: text (lists and objects as JSON)
    ("n={{ params.n }}, ok={{ params.ok }}", "n=3, ok=true"),
    ("{% if params.ok %}yes{% else %}no{% endif %}", "yes"),
    ("{{ upstream.a.missing is defined }}", False),
    ("{{ range(3) | list }}", [0, 1, 2]),
])
def test_what_a_template_renders_to(template, rendered):
    config = render_config({"v": template}, {"list": [1, "two"], "n": 3, "ok": True}, {"a": {}}, "x")
    assert config["v"] == rendered


def test_the_engines_own_keys_are_never_rendered():
    config = {"when": "params.x", "timeout": 5, "v": "{{ params.x }}"}
    assert render_config(config, {"x": 1}, {}, "x") == {"when": "params.x", "timeout": 5, "v": 1}


@pytest.mark.parametrize("command, reference", [
    ("echo {{ params.x }}", 'echo "${PIPELINE_VALUE_1}"'),
    ('echo "a {{ params.x }} b"', 'echo "a ${PIPELINE_VALUE_1} b"'),
    ("echo 'a {{ params.x }} b'", "echo 'a '\"${PIPELINE_VALUE_1}\"' b'"),
    ("echo \\' {{ params.x }}", "echo \\' \"${PIPELINE_VALUE_1}\""),  # an escaped quote opens nothing
])
def test_a_shell_commands_values_become_references_quoted_for_where_they_stand(command, reference):
    value = "it's \"$(touch pwned)\" `id` ; *"
    config = render_config({"command": command, "env": {"A": "b"}}, {"x": value}, {}, "shell")
    assert config["command"] == reference and config["env"] == {"A": "b", "PIPELINE_VALUE_1": value}
    run = subprocess.run(["/bin/sh", "-c", config["command"]], env=config["env"], capture_output=True, text=True,
                         cwd="/")
    assert value in run.stdout  # exactly the value, wherever it stood


@pytest.mark.parametrize("command, message", [
    ("echo \\{{ params.x }}", "right after a backslash"),
    ("echo \0 {{ params.x }}", "NUL"),
])
def test_a_shell_command_that_cannot_carry_a_value_safely_is_an_error(command, message):
    with pytest.raises(TemplateProblem, match=message):
        render_config({"command": command}, {"x": "v"}, {}, "shell")


def test_other_step_types_render_a_command_as_text():
    assert render_config({"command": "echo {{ params.x }}"}, {"x": "; id"}, {}, "http") == {"command": "echo ; id"}


@pytest.mark.parametrize("expression, holds", [
    ("params.mode == 'full'", True), ("upstream.a is none", True), ("params.n > 2 and not params.off", True),
    ("params.n in [1, 2]", False)])
def test_conditions(expression, holds):
    assert evaluate_condition(expression, {"mode": "full", "n": 3, "off": False}, {"a": None}) is holds


@pytest.mark.parametrize("expression, message", [
    ("params.nope > 1", "has no attribute 'nope'"),
    ("params.__class__.__mro__", "unsafe"),
    ("params.list.append(1)", "unsafe"),                  # the data cannot be changed
    ("'x' * 10**9", "at most"),
])
def test_a_condition_that_cannot_be_evaluated_says_why(expression, message):
    with pytest.raises(TemplateProblem, match=message):
        evaluate_condition(expression, {"list": [1]}, {})
