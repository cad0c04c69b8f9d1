"""The file tree is the map: the package's sources are held to docs/ARCHITECTURE.md's
"Who may call whom" — an arrow points down only, the leaves import nothing of the package
but each other, and no module reads another's private (``_name``) attributes.

Read from the sources with ``ast`` (imports inside functions count too), so a change that
breaks a rule fails here, naming the module and the line, before a reviewer has to find it.
"""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline_service"
ARCHITECTURE = PACKAGE.parent / "docs" / "ARCHITECTURE.md"

# the modules every part may use (docs/ARCHITECTURE.md names the same list)
LEAVES = {"status", "dag", "json_objects", "waits", "templating", "ticks", "priority", "ids", "views",
          "exceptions", "shipped", "messages"}
# what people and hosts reach: nothing below them imports these (host.config, which reads a
# host's config.json for the api's load_pipeline_service, imports only exceptions)
TOP = ("api", "host", "web", "init", "demo", "__main__")
BELOW_TOP_MAY_IMPORT = {"api": {"host.config"}}


def module_name(path: Path) -> str:
    """pipeline_service/engine/progress.py -> engine.progress; a package's __init__ -> its name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def sources() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, tree: ast.Module) -> list[tuple[str, int]]:
    """The package's modules ``name`` imports, each with the line of its import."""
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "pipeline_service":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import x` / `from .host import config` name modules
                target = ".".join(base + [alias.name])
                found.append((target if is_module(target) else ".".join(base) or "__init__", node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".", 1)[1] if "." in a.name else "__init__", node.lineno)
                      for a in node.names if a.name.split(".")[0] == "pipeline_service"]
    return found


GRAPH = {name: imports(name, path, tree) for name, (path, tree) in sources().items()}


def top(name: str) -> str:
    return name.split(".")[0]


def offences(modules, allowed) -> list[str]:
    """``module -> import (line)`` of each import of ``modules`` that ``allowed(module, imported)`` refuses."""
    return [f"{m} -> {target} (line {line})" for m in sorted(modules) for target, line in GRAPH[m]
            if target != m and not allowed(m, target)]


def test_the_graph_is_read_from_every_module():
    assert {"service", "api", "engine.executor", "store.storage", "steps.shell", "host.endpoints"} <= GRAPH.keys()
    assert any(target == "engine.progress" for target, _ in GRAPH["engine.recording"])
    assert any(target == "host.config" for target, _ in GRAPH["api"])  # `from .host import config`


def test_the_leaves_import_nothing_of_the_package_but_each_other():
    assert offences([m for m in GRAPH if m in LEAVES], lambda m, t: t in LEAVES) == []


def test_the_store_imports_only_the_leaves_and_itself():
    assert offences([m for m in GRAPH if top(m) == "store"], lambda m, t: t in LEAVES or top(t) == "store") == []


def test_the_engine_imports_only_the_leaves_the_store_and_itself():
    assert offences([m for m in GRAPH if top(m) == "engine"],
                    lambda m, t: t in LEAVES or top(t) in ("store", "engine")) == []


def test_the_built_in_step_types_import_only_the_leaves():
    """steps/ holds plain handlers: the engine never imports them, they never import the engine."""
    assert offences([m for m in GRAPH if top(m) == "steps"], lambda m, t: t in LEAVES or top(t) == "steps") == []
    assert [m for m in GRAPH if top(m) == "engine" and any(top(t) == "steps" for t, _ in GRAPH[m])] == []


def test_nothing_below_the_facade_imports_what_people_and_hosts_reach():
    below = [m for m in GRAPH if top(m) not in TOP and m != "__init__"]
    assert offences(below, lambda m, t: top(t) not in TOP or t in BELOW_TOP_MAY_IMPORT.get(m, ())) == []


def test_the_imports_make_no_cycle():
    """An arrow points down only: following imports never comes back to where it started."""
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for target, _ in GRAPH.get(m, ()):
            if target == m or target not in GRAPH:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[m] = "done"
    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def private_reads(tree: ast.Module) -> list[tuple[str, int]]:
    """``x._name`` where x is not self or cls, and ``from m import _name``: a private name of another."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((ast.unparse(node), node.lineno))
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pipeline_service")):
            found += [(f"from {node.module} import {a.name}", node.lineno) for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_reads_a_private_name_of_another():
    found = [f"{name}: {what} (line {line})" for name, (_, tree) in sources().items()
             for what, line in private_reads(tree)]
    assert found == []


@pytest.mark.parametrize("source, expected", [
    ("other._cache.clear()", ["other._cache"]),
    ("self._cache.clear()", []),
    ("from .engine.caches import _Entry", ["from engine.caches import _Entry"]),
    ("x.__class__", []),
])
def test_the_private_name_check_sees_what_it_must(source, expected):
    assert [what for what, _ in private_reads(ast.parse(source))] == expected


def test_the_architecture_names_the_same_leaves():
    """docs/ARCHITECTURE.md's sentence on the leaves lists exactly the modules held to it here."""
    text = " ".join(ARCHITECTURE.read_text(encoding="utf-8").split())
    sentence = re.search(r"The leaves \(([^)]*)\) import nothing of the package", text)
    assert sentence, "docs/ARCHITECTURE.md no longer says which modules are the leaves"
    assert set(re.findall(r"`(\w+)`", sentence.group(1))) == LEAVES
