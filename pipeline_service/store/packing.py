"""How an artifact's JSON text is stored: as text, or compressed above a threshold.

An artifact row holds its JSON text in ``content``, or — when the text is larger than
the service's ``compress_above`` option — that text compressed with zlib (the
standard library's, a maintained codec) in ``packed``, with ``content`` NULL.  The
encoding never leaves the package: every reader goes through ``text_of``, and the API
returns the decoded JSON.  A zlib stream names itself (its first byte, 0x78), so a
later codec can be told apart by its own magic bytes without a column of its own.
"""
import zlib
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidInputError

# zlib level 1: ~4x faster than the default 6 on text, and 85–95% of its ratio; the
# compression runs on the event loop when an outcome is recorded
ZLIB_LEVEL = 1
DEFAULT_COMPRESS_ABOVE = 8 * 1024  # bytes of JSON text; below it compression saves little
MAX_COMPRESS_ABOVE = 1 << 31


@dataclass(frozen=True)
class Stored:
    """An artifact's JSON text as its row stores it: ``content`` (text) or ``packed`` (bytes)."""

    content: str | None
    packed: bytes | None

    @property
    def size(self) -> int:
        """Bytes this takes in the row (characters of text: a close bound on its UTF-8 size)."""
        return len(self.packed) if self.packed is not None else len(self.content or "")


def check_threshold(value: object) -> int | None:
    """The ``compress_above`` option: bytes (0 compresses everything larger than nothing), or None: never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COMPRESS_ABOVE:
        raise InvalidInputError(f"compress_above must be a number of bytes from 0 to {MAX_COMPRESS_ABOVE:,}, or "
                                f"None (never compress), got {value!r:.40}")
    return value


def pack(text: str, compress_above: int | None) -> Stored:
    """``text`` as stored: compressed when longer than ``compress_above`` and smaller so."""
    if compress_above is None or len(text) <= compress_above:
        return Stored(text, None)
    packed = zlib.compress(text.encode("utf-8"), ZLIB_LEVEL)
    return Stored(None, packed) if len(packed) < len(text) else Stored(text, None)


def text_of(row: dict[str, Any]) -> str | None:
    """The JSON text of an artifact row (``content`` and ``packed`` as read), or None if it has none."""
    packed = row.get("packed")
    if packed is not None:
        return zlib.decompress(bytes(packed)).decode("utf-8")
    return row.get("content")
