"""JSON in and out (artifact contents, configs, parameters), and the writes a state change gathers.

``Writes`` collects the artifacts a transaction stores and the steps it makes
ready, then writes them together: one multi-row INSERT, one UPDATE per input version.
"""
import json

from .exceptions import InvalidInputError


def to_json(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def from_json(text):
    return None if text is None else json.loads(text)


def parse_json_object(value, what):
    """A JSON object given as a dict or as JSON text; otherwise an InvalidInputError naming ``what``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


class Writes:
    """Artifacts to insert and steps to make ready, gathered in a transaction and
    written together (one multi-row INSERT, one UPDATE per input version)."""

    def __init__(self, manager, tx, now):
        self.manager, self.tx, self.now = manager, tx, now
        self.artifacts, self._ready, self._outputs = [], {}, {}

    def artifact(self, tenant_id, task_id, step_name, kind, version, content, source, lineage):
        self.artifacts.append(self.manager._artifact_row(self.tx, tenant_id, task_id, step_name, kind, version,
                                                         content, source, lineage, self.now))
        if kind == "output":
            self._outputs[(tenant_id, task_id, step_name, version)] = content

    def ready(self, tenant_id, step_id, input_version):
        self._ready.setdefault(input_version, []).append(step_id)
        self.tx.on_commit(lambda: self.manager._ready_tenants.add(tenant_id))

    async def output(self, tenant_id, task_id, step_name, version):
        """An output version's content: written in this transaction, cached, or read."""
        key = (tenant_id, task_id, step_name, version)
        content = self._outputs.get(key, self.manager._outputs.get(key))
        if content is None:
            artifact = await self.tx.fetch_one("get_artifact", tenant_id=tenant_id, task_id=task_id,
                                               step_name=step_name, kind="output", version=version)
            content = from_json(artifact["content"])
        return content

    def flush(self):
        """Queue the writes gathered so far (deferred: they go with the transaction's next round trip)."""
        self.tx.defer_many("insert_artifact", self.artifacts)
        for version, ids in self._ready.items():
            self.tx.defer("make_steps_ready", ids=ids, input_version=version, now=self.now)
        self.artifacts, self._ready = [], {}
