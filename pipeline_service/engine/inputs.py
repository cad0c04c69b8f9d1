"""Inputs by reference: what an engine-built input artifact stores, and the full input made from it.

A step's input is ``{"params": <the task's params>, "upstream": {dep: <dep's output>}}``.
The engine stores it as its lineage only (docs/SEMANTICS.md, "Inputs by reference"):
the row's ``lineage`` names the upstream output versions (``{dep: version}``) and its
``content`` is NULL — or a JSON object of extra small fields kept beside params and
upstream (e.g. a step's rendered config), stored verbatim — never copies of the
outputs.  Params and outputs are immutable, so the input made from them when a
handler runs or a person reads the node is the one that would have been copied.

Which rows are references: kind ``input``, source ``engine``, and a content that is
NULL or has no ``upstream`` key.  An engine-built input written before inputs were
stored by reference holds ``{"params", "upstream"}`` in full and is read as it is;
a person's edit (source ``manual``) is stored and read verbatim.
"""
from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import StorageError
from ..json_objects import from_json, to_json
from ..store.packing import text_of
from .caches import ArtifactKey
from .records import InputRecipe

RESERVED = ("params", "upstream")  # the keys a reference's extra fields may not use


def reference_content(extra: dict[str, Any] | None) -> str | None:
    """The content column of an input stored by reference: its extra fields, if any."""
    if not extra:
        return None
    clash = [k for k in RESERVED if k in extra]
    if clash:
        raise ValueError(f"the extra fields of an input may not be named {clash}")
    return to_json(extra)


def recipe_of(row: dict[str, Any]) -> InputRecipe:
    """What an input artifact row (``content``/``packed``, ``source``, ``lineage``) says to build."""
    text = text_of(row)
    if row["source"] == "engine" and (text is None or "upstream" not in from_json(text)):
        return InputRecipe(text, {k: int(v) for k, v in (from_json(row["lineage"]) or {}).items()})
    return InputRecipe(text, None)


def materialise(recipe: InputRecipe, params_text: str, outputs: dict[str, str]) -> dict[str, Any]:
    """The full input a handler (or a reader) gets: decoded afresh, so it is the caller's own copy.
    ``outputs``: the JSON text of each upstream output version the recipe names, by step."""
    if recipe.lineage is None:
        return from_json(recipe.text)
    made = {"params": from_json(params_text), "upstream": {dep: from_json(outputs[dep]) for dep in recipe.lineage}}
    if recipe.text is not None:
        made.update(from_json(recipe.text))
    return made


async def read_outputs(tx, tenant_id: str, task_id: str, wanted: dict[str, int],
                       known: dict[str, str] | None = None) -> dict[str, str]:
    """The JSON text of the output versions ``wanted`` ({step: version}) of one task: those in
    ``known`` ({step: text}), the rest read in one statement."""
    keys = {dep: (tenant_id, task_id, dep, version) for dep, version in wanted.items()}
    texts = await read_output_texts(tx, keys.values(), {keys[dep]: text for dep, text in (known or {}).items()
                                                        if dep in keys})
    return {dep: texts[key] for dep, key in keys.items()}


async def read_output_texts(tx, wanted: Iterable[ArtifactKey], known: Mapping[ArtifactKey, str]) -> dict[ArtifactKey, str]:
    """The JSON text of the output versions ``wanted`` ((tenant, task, step, version), of any
    tasks): those in ``known``, the rest read in one statement."""
    found = {key: known[key] for key in wanted if key in known}
    missing = sorted(set(wanted) - found.keys())
    if missing:
        rows = await tx.fetch_union("get_artifact", [
            dict(tenant_id=key[0], task_id=key[1], step_name=key[2], kind="output", version=key[3])
            for key in missing])
        for r in rows:
            text = text_of(r)
            if text is not None:
                found[(r["tenant_id"], r["task_id"], r["step_name"], int(r["version"]))] = text
        lost = [key for key in missing if key not in found]
        if lost:  # purge keeps every output a kept input names: this is a broken database
            raise StorageError(f"the output versions {[(k[1], k[2], k[3]) for k in lost]} (task, step, version) "
                               "an input names are not stored")
    return found
