"""The writes a state change gathers: artifacts to insert, steps to make ready and steps to skip,
written together (one multi-row INSERT, one UPDATE per input version); caches change at commit.

An engine-built input is stored by reference (engine/inputs.py): its lineage, not
copies of the outputs it is made from.  An artifact's JSON text is stored compressed
above the service's threshold (store/packing.py) and is refused, naming the limit,
when the database could not take it in one write (MySQL's max_allowed_packet)."""
from typing import Any

from ..exceptions import InvalidInputError
from ..ids import new_id
from ..json_objects import to_json
from ..store.packing import NOTHING, Stored, pack
from .caches import EngineCaches
from .inputs import reference_content
from .records import ContentOptions, InputRecipe

# what a write needs besides its artifact's bytes (the statement, the row's other columns);
# an artifact's bytes can double when escaped for MySQL (quotes, backslashes, newlines)
WRITE_OVERHEAD = 64 * 1024


def check_writable(stored: Stored, max_write_bytes: int | None, what: str) -> None:
    """Refuse an artifact the database cannot take in one write (MySQL: max_allowed_packet,
    counting twice its bytes: more than their base64 on the wire, or the worst case of escaping)."""
    if max_write_bytes is not None and 2 * stored.size + WRITE_OVERHEAD > max_write_bytes:
        raise InvalidInputError(
            f"{what} is {stored.size:,} bytes as stored; the MySQL server's max_allowed_packet "
            f"({max_write_bytes:,} bytes) takes at most {(max_write_bytes - WRITE_OVERHEAD) // 2:,} in one "
            "write (raise max_allowed_packet, or return less)")


class Writes:
    def __init__(self, caches: EngineCaches, tx, now: int, options: ContentOptions) -> None:
        self.caches, self.tx, self.now, self.options = caches, tx, now, options
        self.artifacts: list = []
        self._ready: dict = {}
        self._skipped: dict = {}
        self._written: dict = {}  # outputs written in this transaction: key -> JSON text

    def artifact(self, tenant_id, task_id, step_name, kind, version, content: Any, source, lineage,
                 stored: Stored | None = None, text: str | None = None) -> None:
        """An artifact stored as given (an output, or an input a person typed): ``stored`` and
        ``text`` if made already (an outcome's), else made from ``content``."""
        if text is None:
            text = to_json(content)
        if stored is None:
            stored = pack(text, self.options.compress_above)
        check_writable(stored, self.tx.max_write_bytes, f"the {kind} of step {step_name!r}")
        key = (tenant_id, task_id, step_name, version)
        if kind == "output":
            self._written[key] = text
            self.tx.on_commit(lambda: self.caches.remember_output(key, text))
        else:
            self.tx.on_commit(lambda: self.caches.remember_input(key, InputRecipe(text, None)))
        self._insert(tenant_id, task_id, step_name, kind, version, stored, source, lineage)

    def input_by_reference(self, tenant_id, task_id, step_name, version, lineage: dict[str, int],
                           extra: dict[str, Any] | None = None) -> None:
        """An engine-built input: the upstream output versions it is made from (``lineage``), and
        ``extra`` small fields stored verbatim beside them (engine/inputs.py)."""
        text = reference_content(extra)
        key = (tenant_id, task_id, step_name, version)
        recipe = InputRecipe(text, dict(lineage))
        self.tx.on_commit(lambda: self.caches.remember_input(key, recipe))
        self._insert(tenant_id, task_id, step_name, "input", version, pack(text, self.options.compress_above)
                     if text is not None else NOTHING, "engine", lineage)

    def _insert(self, tenant_id, task_id, step_name, kind, version, stored: Stored, source, lineage) -> None:
        self.artifacts.append(dict(id=new_id(), tenant_id=tenant_id, task_id=task_id, step_name=step_name, kind=kind,
                                   version=version, content=stored.content, packed=stored.packed, source=source,
                                   lineage=to_json(lineage), now=self.now))

    def ready(self, tenant_id, step_id, input_version) -> None:
        self._ready.setdefault(input_version, []).append(step_id)
        self.tx.on_commit(lambda: self.caches.ready_tenants.add(tenant_id))

    def skip(self, step_id, input_version) -> None:
        """Skip a pending step (with the input its condition was evaluated on, or None: keep its own)."""
        self._skipped.setdefault(input_version, []).append(step_id)

    def known_outputs(self, tenant_id, task_id, versions: dict[str, int]) -> dict[str, str]:
        """The JSON text of the output versions ``versions`` ({step: version}) known without a
        read: written in this transaction (not sent yet) or cached."""
        known = {}
        for step_name, version in versions.items():
            key = (tenant_id, task_id, step_name, version)
            text = self._written.get(key) or self.caches.outputs.get(key)
            if text is not None:
                known[step_name] = text
        return known

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
