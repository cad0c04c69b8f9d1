"""A step being made ready: its `when` decided, its config rendered (docs/SEMANTICS.md,
"Conditions and templates").

What the engine adds to a step's input is a few extra fields beside ``params`` and
``upstream``: the rendered config (``"config"``), only when the step's config has templates
— it is what the handler gets, and ``pipeline_node`` shows it — or the reason it could not
be rendered (``"template_error"``): the step is made ready all the same and its attempt
fails with that message, like any attempt (so the error is where every step error is: the
step's ``error``).  A dependency that was skipped has no entry in ``upstream`` (nor in the
input's lineage): it made no output in this run.
"""
from dataclasses import dataclass, field
from typing import Any

from ..dag import StepDef
from ..exceptions import InvalidInputError
from ..templating import TemplateProblem, evaluate_condition, render_config

CONFIG = "config"                  # the rendered config, in an input
TEMPLATE_ERROR = "template_error"  # why it could not be rendered (the attempt fails with it)
ENGINE_KEYS = (CONFIG, TEMPLATE_ERROR)


@dataclass(frozen=True)
class Prepared:
    """Whether a step runs (False: its `when` is false: it is skipped), and the fields the engine
    adds to its input."""

    runs: bool
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(step: StepDef, params: Any, upstream: dict[str, Any]) -> Prepared:
    """Decide ``step``'s `when` and render its config over ``params`` and the outputs of its
    dependencies that were not skipped (``upstream``)."""
    when = step.config.get("when")
    try:
        if when is not None and not evaluate_condition(when, params, upstream):
            return Prepared(False)
        if step.templated:
            return Prepared(True, {CONFIG: render_config(step.config, params, upstream, step.step_type)})
    except TemplateProblem as exc:
        return Prepared(True, {TEMPLATE_ERROR: f"step {step.name!r}: {exc}"})
    return Prepared(True)


def edited(step: StepDef, content: dict[str, Any]) -> dict[str, Any]:
    """A person's new input for ``step`` as stored: as given, with the config rendered from it by
    the engine (never taken from the edit: a config edited by hand could make a shell step run
    anything).  Its `when` is not asked again (a person who gives a step its input wants it to
    run).  A config that does not render refuses the edit (InvalidInputError)."""
    stored = {k: v for k, v in content.items() if k not in ENGINE_KEYS}
    if step.templated:
        try:
            stored[CONFIG] = render_config(step.config, stored.get("params"), stored.get("upstream"), step.step_type)
        except TemplateProblem as exc:
            raise InvalidInputError(f"the new input of step {step.name!r} does not render its config: {exc}") from None
    return stored


def for_handler(step: StepDef, content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(the input a handler sees, the config it gets, or the template error its attempt fails with)."""
    error = content.get(TEMPLATE_ERROR)
    config = content.get(CONFIG) if step.templated else None
    data = {k: v for k, v in content.items() if k not in ENGINE_KEYS}
    if error is None and config is None and step.templated:
        # an input stored before its step's config was rendered (by an earlier version)
        try:
            config = render_config(step.config, data.get("params"), data.get("upstream"), step.step_type)
        except TemplateProblem as exc:
            error = f"step {step.name!r}: {exc}"
    if config is None:
        config = step.config
    return data, config, (str(error) if error is not None else None)
