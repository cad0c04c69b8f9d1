"""The writes a state change gathers: artifacts to insert, steps to make ready and steps to skip,
written together (one multi-row INSERT, one UPDATE per input version); caches change at commit."""
from ..ids import new_id
from ..json_objects import from_json, to_json
from .caches import EngineCaches


class Writes:
    def __init__(self, caches: EngineCaches, tx, now: int) -> None:
        self.caches, self.tx, self.now = caches, tx, now
        self.artifacts: list = []
        self._ready: dict = {}
        self._skipped: dict = {}
        self._outputs: dict = {}

    def artifact(self, tenant_id, task_id, step_name, kind, version, content, source, lineage) -> None:
        text = to_json(content)
        key = (tenant_id, task_id, step_name, version)
        # cached once committed, as decoded from the stored text: equal to what is stored
        self.tx.on_commit(lambda: self.caches.artifact(kind, key, from_json(text)))
        self.artifacts.append(dict(id=new_id(), tenant_id=tenant_id, task_id=task_id, step_name=step_name, kind=kind,
                                   version=version, content=text, source=source, lineage=to_json(lineage),
                                   now=self.now))
        if kind == "output":
            self._outputs[key] = content

    def ready(self, tenant_id, step_id, input_version) -> None:
        self._ready.setdefault(input_version, []).append(step_id)
        self.tx.on_commit(lambda: self.caches.ready_tenants.add(tenant_id))

    def skip(self, step_id, input_version) -> None:
        """Skip a pending step (with the input its condition was evaluated on, or None: keep its own)."""
        self._skipped.setdefault(input_version, []).append(step_id)

    async def output(self, tenant_id, task_id, step_name, version):
        """An output version's content: written in this transaction, cached, or read."""
        key = (tenant_id, task_id, step_name, version)
        content = self._outputs.get(key, self.caches.outputs.get(key))
        if content is None:
            artifact = await self.tx.fetch_one("get_artifact", tenant_id=tenant_id, task_id=task_id,
                                               step_name=step_name, kind="output", version=version)
            content = from_json(artifact["content"])
        return content

    def flush(self) -> None:
        """Queue the writes gathered so far (deferred: they go with the transaction's next round trip)."""
        self.tx.defer_many("insert_artifact", self.artifacts)
        for version, ids in self._ready.items():
            self.tx.defer("make_steps_ready", ids=ids, input_version=version, now=self.now)
        for version, ids in self._skipped.items():
            if version is None:
                self.tx.defer("skip_steps", ids=ids, now=self.now)
            else:
                self.tx.defer("skip_steps_with_input", ids=ids, input_version=version, now=self.now)
        self.artifacts, self._ready, self._skipped = [], {}, {}
