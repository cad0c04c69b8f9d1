"""The ``approval`` step type (Conductor HUMAN, DBOS ``recv``): a person decides.

Config: ``prompt`` (what the person is asked), ``choices`` (default ``["approve", "reject"]``),
``timeout`` (seconds to wait for a decision, at most a year; none: wait for ever), ``on_timeout`` (``"fail"``,
the default, or one of the choices: the decision taken when no one decided in time),
``on_reject`` (``"fail"``, the default: a ``reject`` fails the step with "rejected by <actor>";
``"continue"``: it is the step's output like any other decision).

The step waits without a slot for ``pipeline_signal(tenant_id, task_id, step_name,
{"decision": ..., ...})``; its output is ``{decision, payload, actor, decided_at}``
(``timed_out``: true when ``on_timeout`` decided).
"""
from dataclasses import dataclass
from typing import Any

from ..dag import MAX_WAIT_SECONDS, check_seconds
from ..exceptions import InvalidInputError, StepFailed
from ..ids import iso, now_ms
from ..waits import Wait, waiting_handler

DEFAULT_CHOICES = ("approve", "reject")
REJECT = "reject"


@dataclass(frozen=True)
class ApprovalConfig:
    prompt: str | None
    choices: tuple[str, ...]
    timeout: float | None
    on_timeout: str
    on_reject: str

    @classmethod
    def parse(cls, config: dict[str, Any]) -> "ApprovalConfig":
        choices = config.get("choices", list(DEFAULT_CHOICES))
        checked = Wait.signal(choices, prompt=config.get("prompt"))  # the same checks as the wait's
        timeout = config.get("timeout")
        if timeout is not None:
            check_seconds(timeout, "approval config.timeout", maximum=MAX_WAIT_SECONDS, allow_minimum=False)
        on_timeout = config.get("on_timeout", "fail")
        if on_timeout != "fail" and on_timeout not in (checked.choices or ()):
            raise InvalidInputError(f"approval config.on_timeout must be 'fail' or one of the choices "
                                    f"({', '.join(checked.choices or ())}), got {on_timeout!r}")
        on_reject = config.get("on_reject", "fail")
        if on_reject not in ("fail", "continue"):
            raise InvalidInputError(f"approval config.on_reject must be 'fail' or 'continue', got {on_reject!r}")
        return cls(checked.prompt, checked.choices or DEFAULT_CHOICES, timeout, on_timeout, on_reject)

    def wait(self, until: int | None) -> Wait:
        return Wait.signal(self.choices, until, self.prompt)


@waiting_handler
async def run(tenant_id: str, task_id: str, step_name: str, input_data: dict[str, Any],
              config: dict[str, Any]) -> dict[str, Any] | Wait:
    cfg = ApprovalConfig.parse(config)
    waited = input_data.get("waited")
    if waited is None:  # asked now
        return cfg.wait(None if cfg.timeout is None else now_ms() + int(cfg.timeout * 1000))
    signal = waited.get("woken_by")
    if signal is None:
        until = waited["for"].get("until")
        if until is None or now_ms() < until:
            return cfg.wait(until)  # looked at early (its task was resumed): the question stands
        if cfg.on_timeout == "fail":
            raise StepFailed(f"no decision within {cfg.timeout:g}s (approval timed out)")
        return {"decision": cfg.on_timeout, "payload": None, "actor": None, "decided_at": iso(until),
                "timed_out": True}
    payload, actor = signal["payload"], signal.get("actor")
    decision = payload.get("decision")
    if decision == REJECT and cfg.on_reject == "fail":
        raise StepFailed(f"rejected by {actor if actor else 'an unnamed actor'}")
    return {"decision": decision, "payload": payload, "actor": actor, "decided_at": iso(signal["at"])}
