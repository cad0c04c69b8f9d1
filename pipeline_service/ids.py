"""Identifiers, names and texts as the tables store them; time stamps.

The one rule for every id the API accepts (tenant, task, pipeline, owner, step
name, step type): a string of 1 to ``MAX_ID`` (names: ``MAX_NAME``) printable
characters without leading or trailing whitespace.  Ids compare exactly
(binary collation on MySQL, see schema.py): ``ACME``, ``acme`` and ``ácme`` are
three tenants.  Whitespace at the edges is refused rather than kept because
MySQL's binary collations still ignore trailing spaces (PAD SPACE): ``acme `` could
not be told from ``acme`` there.
"""
import secrets
import time
from datetime import datetime, timezone

from .exceptions import InvalidInputError

MAX_ID = 32      # tenant, task, pipeline and owner ids: the models' str(32) columns
MAX_NAME = 64    # step names and step types: str(64)
MAX_TITLE = 255  # a task's title, a pipeline's name: str(255)


def check_id(value: object, what: str, max_length: int = MAX_ID) -> str:
    """``value`` if it is an id by the rule above, else an InvalidInputError naming ``what``."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string, got {_shown(value)}")
    if len(value) > max_length:
        raise InvalidInputError(f"{what} must be at most {max_length} characters, got {len(value)}")
    if value != value.strip():
        raise InvalidInputError(f"{what} must not start or end with whitespace, got {_shown(value)}")
    if not value.isprintable():  # control, format, private-use, unassigned and surrogate code points
        raise InvalidInputError(f"{what} must consist of printable characters, got {_shown(value)}")
    return value


def check_name(value: object, what: str) -> str:
    """A step name or step type: an id of up to MAX_NAME characters."""
    return check_id(value, what, MAX_NAME)


def check_text(value: object, what: str, max_length: int | None = None) -> str:
    """Free text (a title, a name, a description): a string the database can store as UTF-8."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise InvalidInputError(f"{what} must be at most {max_length} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} contains a lone surrogate, which UTF-8 cannot store") from None
    return value


def _shown(value: object) -> str:
    """A rejected value for an error message: bounded, printable (repr escapes what is not),
    and never the repr of a caller's object (it may be huge or raise)."""
    if not isinstance(value, str):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def new_id() -> str:
    """A 21-character id of the ecosystem's form: a nanoid, 21 characters drawn uniformly from
    the 64 URL-safe ones (A-Z, a-z, 0-9, '_', '-'), 126 random bits; fits the str(32) id
    columns.  Drawn as URL-safe base64 of random bytes (one call, ~5x faster than appPublic's
    getID, which builds it a character at a time: one id per step and artifact adds up).

    Never one that starts with '-': an id is passed to command lines, where a
    leading '-' reads as an option.
    """
    while True:
        value = secrets.token_urlsafe(16)[:21]
        if not value.startswith("-"):
            return value


def now_ms() -> int:
    """Wall-clock time as integer epoch milliseconds (the tables' time unit)."""
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO-8601 UTC string for the API, None stays None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
