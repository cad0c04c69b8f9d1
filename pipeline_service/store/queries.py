"""Every SQL statement of the package, by name: the blocks of ``queries.sql``, parsed once.

``queries.sql`` says how a block is written (``-- name:`` headers, dialect variants,
``{{fragment}}`` includes, ``{step:<status>}`` placeholders, ``{text:<name>}`` and
``{bytes:<name>}`` parameters).  Parsing expands the includes, fills the status placeholders
from ``status.py``'s enums and writes each dialect's form of the encoded parameters (a
statement that has one gets a variant per dialect), so the statements handed out are plain
SQL with sqlor's ``${name}$`` parameters.  A malformed file is a
bug of the package: a ValueError at import, naming the line or statement.
"""
import re
from pathlib import Path

from ..status import STEP_STATUS_GROUPS, TASK_STATUS_GROUPS, ScheduleStatus, StepStatus, TaskStatus

SQL_FILE = Path(__file__).with_name("queries.sql")
DIALECTS = ("mysql", "sqlite")
# a variant a statement may have beside its dialect's, for a kind of server of that dialect
# (a Galera cluster); where a statement has none, the dialect's own variant is used
REFINEMENTS = {"galera": "mysql"}
HEADER = re.compile(r"--\s*(name|fragment):\s*(\w+)(?:\s+:(\w+))?\s*$")
INCLUDE = re.compile(r"\{\{(\w+)\}\}")
STATUS = re.compile(r"\{(task|step|steps|tasks|schedule):(\w+)\}")
ENUMS = {"task": TaskStatus, "step": StepStatus, "schedule": ScheduleStatus}
# a parameter that may be long text ({text:x}) or bytes ({bytes:x}): on MySQL sent in base64 and
# decoded by the statement (store/sqlor_adapter.py: aiomysql cannot send bytes, and escapes text
# that is not ASCII ~5x slower than its base64), on SQLite bound as it is
ENCODED = re.compile(r"\{(text|bytes):(\w+)\}")
DECODING = {"text": "CONVERT(FROM_BASE64(${{{}}}$) USING utf8mb4)", "bytes": "FROM_BASE64(${{{}}}$)"}


def blocks(text):
    """``(kind, name, dialect, body)`` of every block, comment lines dropped."""
    found, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        header = HEADER.match(line.strip())
        if header:
            current = [*header.groups(), []]
            found.append(current)
        elif line.strip().startswith("--") or not line.strip():
            continue
        elif current is None:
            raise ValueError(f"{SQL_FILE.name}:{number}: SQL before the first -- name: header")
        else:
            current[3].append(line.rstrip())
    return [(kind, name, dialect, "\n".join(body)) for kind, name, dialect, body in found]


def quoted(kind, name):
    """The SQL literal(s) of status placeholder ``{kind:name}``."""
    if kind == "steps":
        if name not in STEP_STATUS_GROUPS:
            raise ValueError(f"no step status group {name!r} (status.STEP_STATUS_GROUPS)")
        return ", ".join(f"'{s}'" for s in StepStatus if s in STEP_STATUS_GROUPS[name])
    if kind == "tasks":
        if name not in TASK_STATUS_GROUPS:
            raise ValueError(f"no task status group {name!r} (status.TASK_STATUS_GROUPS)")
        return ", ".join(f"'{s}'" for s in TaskStatus if s in TASK_STATUS_GROUPS[name])
    try:
        return f"'{ENUMS[kind](name)}'"
    except ValueError:
        raise ValueError(f"{name!r} is not a {ENUMS[kind].__name__}") from None


def expand(name, body, fragments):
    def include(match):
        if match.group(1) not in fragments:
            raise ValueError(f"statement {name!r} includes an unknown fragment {match.group(1)!r}")
        return fragments[match.group(1)]
    try:
        return STATUS.sub(lambda m: quoted(*m.groups()), INCLUDE.sub(include, body))
    except ValueError as exc:
        raise ValueError(f"{SQL_FILE.name}, statement {name!r}: {exc}") from None


def decoded(sql, dialect):
    """``sql`` with its encoded parameters as ``dialect`` takes them."""
    if REFINEMENTS.get(dialect, dialect) != "mysql":
        return ENCODED.sub(lambda m: f"${{{m.group(2)}}}$", sql)
    return ENCODED.sub(lambda m: DECODING[m.group(1)].format(m.group(2)), sql)


def parse(text):
    """{name: SQL, or {dialect: SQL} for a statement with dialect variants}."""
    fragments, statements = {}, {}
    for kind, name, dialect, body in blocks(text):
        if not body:
            raise ValueError(f"{SQL_FILE.name}: {kind} {name!r} is empty")
        if kind == "fragment":
            fragments[name] = body
            continue
        if dialect is not None and dialect not in DIALECTS and dialect not in REFINEMENTS:
            raise ValueError(f"{SQL_FILE.name}: statement {name!r} has an unknown dialect {dialect!r}")
        known = statements.get(name)
        if known is not None and (dialect is None or not isinstance(known, dict) or dialect in known):
            raise ValueError(f"{SQL_FILE.name}: statement {name!r} is defined twice")
        sql = expand(name, body, fragments)
        if dialect is None and ENCODED.search(sql):
            statements[name] = {d: decoded(sql, d) for d in DIALECTS}
        elif dialect is None:
            statements[name] = sql
        else:
            statements.setdefault(name, {})[dialect] = decoded(sql, dialect)
    for name, sql in statements.items():
        if isinstance(sql, dict) and set(sql) - set(REFINEMENTS) != set(DIALECTS):
            raise ValueError(f"{SQL_FILE.name}: statement {name!r} has variants for {sorted(sql)} only")
    return statements


STATEMENTS = parse(SQL_FILE.read_text(encoding="utf-8"))


def statement(name, dialect):
    try:
        sql = STATEMENTS[name]
    except KeyError:
        raise KeyError(f"no SQL statement named {name!r}") from None
    if not isinstance(sql, dict):
        return sql
    return sql[dialect] if dialect in sql else sql[REFINEMENTS[dialect]]
