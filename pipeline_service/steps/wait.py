"""The ``wait`` step type (Conductor WAIT): a durable timer.

Config: ``seconds`` (from when the step starts, at most a year) or ``until`` (an ISO-8601 time;
one without a zone is UTC).  The step waits without a slot until then — a row with a due time,
found by the executor's probe, so it survives restarts — and outputs ``{"waited_until": ISO time}``.
"""
from datetime import datetime, timezone
from typing import Any

from ..dag import MAX_WAIT_SECONDS, check_seconds
from ..exceptions import InvalidInputError
from ..ids import iso, now_ms
from ..waits import Wait, waiting_handler


def _until(config: dict[str, Any]) -> int:
    seconds, until = config.get("seconds"), config.get("until")
    if (seconds is None) == (until is None):
        raise InvalidInputError("wait config needs exactly one of 'seconds' (a number) and 'until' (an ISO time), "
                                f"got {sorted(k for k in ('seconds', 'until') if config.get(k) is not None)}")
    if seconds is not None:
        return now_ms() + int(check_seconds(seconds, "wait config.seconds", maximum=MAX_WAIT_SECONDS) * 1000)
    try:
        moment = datetime.fromisoformat(until.replace("Z", "+00:00")) if isinstance(until, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidInputError(f"wait config.until must be an ISO-8601 time (e.g. 2030-01-31T08:00:00Z), "
                                f"got {str(until)[:60]!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@waiting_handler
async def run(tenant_id: str, task_id: str, step_name: str, input_data: dict[str, Any],
              config: dict[str, Any]) -> dict[str, Any] | Wait:
    waited = input_data.get("waited")
    until = _until(config) if waited is None else waited["for"]["until"]
    if now_ms() >= until:
        return {"waited_until": iso(until)}
    return Wait.timer(until)
