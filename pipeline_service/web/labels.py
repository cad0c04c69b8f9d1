"""The page's words: status labels from init/data.json (the appcodes a host loads), English
from i18n/en/msg.txt. Chinese first, as in the ecosystem; a status the files do not name yet
is shown as its own string (the page needs no change for it beyond a colour)."""
from functools import cache
from typing import Any

from ..host.appcodes import read_codes
from ..messages import read_messages

CODE_SETS = {"task_status": "pipeline_task_status", "step_status": "pipeline_step_status",
             "artifact_source": "pipeline_artifact_source", "schedule_status": "pipeline_schedule_status"}


@cache
def page_labels() -> dict[str, Any]:
    """``{"task_status": {status: {"zh", "en"}}, ..., "text": {中文: English}}``."""
    english = read_messages("en")
    values = read_codes()["appcodes_kv"]
    labels: dict[str, Any] = {name: {row["k"]: {"zh": row["v"], "en": english.get(row["v"], row["k"])}
                                     for row in values if row["parentid"] == code_set}
                              for name, code_set in CODE_SETS.items()}
    labels["text"] = english
    return labels
