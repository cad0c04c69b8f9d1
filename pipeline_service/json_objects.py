"""JSON in and out: artifact contents, configs, parameters.

Every JSON object that enters the package (params, modify updates, step configs,
handler results) passes ``check_json_object``: a dict of strings, numbers,
booleans, nulls, lists and dicts, no NaN or Infinity (not JSON), no lone
surrogate (not UTF-8), at most ``MAX_JSON_DEPTH`` levels deep (deeper input made
``json`` hit Python's recursion limit) and at most ``MAX_JSON_BYTES`` as UTF-8 JSON.
"""
import json
import math
from typing import Any, NoReturn, cast

import orjson

from .exceptions import InvalidInputError

MAX_JSON_DEPTH = 64
# params, one edit, one step config, one handler result: the default of the one limit on
# their size, the service's ``max_content_bytes`` option (docs/SEMANTICS.md, "Input limits").
# Params are stored once (inputs refer to them); an artifact is stored compressed above a
# threshold, and on MySQL a write must also fit the server's max_allowed_packet, which
# engine/writes.py checks by name.
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_JSON_BYTES_LIMIT = 1 << 30  # the option's own bound (a LONGTEXT holds 4 GiB; SQLite 1 GB)
# a step's config: copied into every task's step rows, which a submit writes in one statement
MAX_CONFIG_BYTES = 4 * 1024 * 1024
CONTENT_LIMIT = "the max_content_bytes option"
_CONTAINERS = (dict, list, tuple)
_SCALARS = (str, int, type(None))  # bool is an int; floats are checked for NaN/Infinity


def to_json(value: Any) -> str:
    """Strict JSON text (NaN and Infinity raise ValueError: they are not JSON)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def check_json_object(value: object, what: str, max_depth: int = MAX_JSON_DEPTH,
                      max_bytes: int = MAX_JSON_BYTES, limit: str = CONTENT_LIMIT) -> dict[str, Any]:
    """``value`` if it is a JSON object the tables can store, else an InvalidInputError naming ``what``."""
    stored_json(value, what, max_depth, max_bytes, limit)
    return cast(dict[str, Any], value)  # stored_json refused anything but a dict


def stored_json(value: object, what: str, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES,
                limit: str = CONTENT_LIMIT) -> str:
    """The JSON text ``value`` is stored as, if it is a JSON object the tables can store, else an
    InvalidInputError naming ``what`` (the text is made once: it is the check's own)."""
    return stored_json_utf8(value, what, max_depth, max_bytes, limit)[0]


def stored_json_utf8(value: object, what: str, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES,
                     limit: str = CONTENT_LIMIT) -> tuple[str, bytes]:
    """``stored_json``'s text and its UTF-8 bytes (made by the check: whoever compresses the
    text need not encode it again).  What the walk lets through (dicts with string keys, lists,
    tuples, strings, ints, finite floats, booleans, None) is written by orjson, compact and UTF-8
    like ``to_json``; what orjson does not write (an integer beyond 64 bits, a lone surrogate)
    goes to the standard library's encoder."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    _check_tree(value, what, max_depth)
    try:
        data = orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits or a lone surrogate: the standard library's encoder decides
        data = None
    if data is not None:  # the common case: the same JSON, made ~6x faster on long texts (orjson)
        text = data.decode("utf-8")
    else:
        text, data = _stored_by_json(value, what)
    if len(data) > max_bytes:
        raise InvalidInputError(f"{what} is {len(data):,} bytes as JSON; the limit is {max_bytes:,} bytes ({limit})")
    return text, data


def _stored_by_json(value: object, what: str) -> tuple[str, bytes]:
    """(the JSON text of ``value`` by the standard library's encoder, its UTF-8 bytes), or why it cannot be stored."""
    try:
        text = to_json(value)
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} contains a lone surrogate (U+D800..U+DFFF), which UTF-8 cannot "
                                "store") from None
    except ValueError as exc:  # e.g. an integer past Python's limit for converting it to text
        raise InvalidInputError(f"{what} cannot be written as JSON: {exc}") from None
    return text, data


def _check_tree(value: dict[str, Any], what: str, max_depth: int) -> None:
    """Walk the containers without recursion (a deep input would exhaust Python's stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInputError(f"{what} is nested more than {max_depth} levels deep")
        is_dict = isinstance(node, dict)
        for key, item in (node.items() if is_dict else enumerate(node)):
            if is_dict and not isinstance(key, str):
                raise InvalidInputError(f"{what}: every key of a JSON object is a string, got "
                                        f"{type(key).__name__}")
            if isinstance(item, _CONTAINERS):
                stack.append((item, depth + 1))
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise InvalidInputError(f"{what}: {item!r} at {_where(key)} is not a JSON number")
            elif not isinstance(item, _SCALARS):
                raise InvalidInputError(f"{what}: the {type(item).__name__} at {_where(key)} is not "
                                        "JSON-serialisable (use dicts, lists, strings, numbers, booleans and None)")


def check_max_bytes(value: object, what: str = "max_content_bytes") -> int:
    """The size limit option: a whole number of bytes from 1 KiB to MAX_JSON_BYTES_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= MAX_JSON_BYTES_LIMIT:
        raise InvalidInputError(f"{what} must be a whole number of bytes from 1,024 to {MAX_JSON_BYTES_LIMIT:,}, "
                                f"got {value!r:.40}")
    return value


def _where(key: object) -> str:
    return f"index {key}" if isinstance(key, int) else f"key {ascii(key)[:60]}"


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(value: object, what: str, max_bytes: int = MAX_JSON_BYTES,
                      limit: str = CONTENT_LIMIT) -> dict[str, Any]:
    """A JSON object given as a dict or as JSON text, checked by ``check_json_object``."""
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidInputError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    return check_json_object(value, what, max_bytes=max_bytes, limit=limit)
