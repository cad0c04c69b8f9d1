"""How an artifact's JSON text is stored: as text, or compressed above a threshold.

An artifact row holds its JSON text in ``content``, or — when the text is larger than
the service's ``compress_above`` option — that text compressed with Zstandard (the
``zstandard`` package, level 1) in ``packed``, with ``content`` NULL.  The encoding never
leaves the package: every reader goes through ``text_of``, and the API returns the decoded
JSON.  Each stream names its codec by its first bytes (a Zstandard frame starts with
28 B5 2F FD, a zlib stream with 0x78), so rows packed with zlib by earlier versions are read
as they are, without a column of its own or a migration.
"""
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import zstandard

from ..exceptions import InvalidInputError

# Zstandard level 1 on draft-like text (bench/payload_text.py, 20 KB): ~3x faster than zlib
# level 1 (48 against 157 µs here) and a smaller result (0.38 of the text against 0.41); the
# compression runs on the event loop: a handler's output when the handler returns, before the
# transaction that records it (engine/executor.py; docs/SEMANTICS.md, "Compression")
ZSTD_LEVEL = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFAULT_COMPRESS_ABOVE = 8 * 1024  # bytes of JSON text; below it compression saves little
MAX_COMPRESS_ABOVE = 1 << 31


@dataclass(frozen=True)
class Stored:
    """An artifact's JSON text as its row stores it: ``content`` (text) or ``packed`` (bytes), and
    ``size``, the bytes that takes: the packed bytes, or the text's UTF-8 (three bytes a Chinese
    character: a count of characters would be a third of it)."""

    content: str | None
    packed: bytes | None
    size: int


NOTHING = Stored(None, None, 0)


def as_text(text: str, utf8: bytes | None = None) -> Stored:
    """``text`` stored as it is (``utf8``: its UTF-8, if the caller has it)."""
    return Stored(text, None, len(text.encode("utf-8") if utf8 is None else utf8))


def check_threshold(value: object) -> int | None:
    """The ``compress_above`` option: bytes (0 compresses everything larger than nothing), or None: never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COMPRESS_ABOVE:
        raise InvalidInputError(f"compress_above must be a number of bytes from 0 to {MAX_COMPRESS_ABOVE:,}, or "
                                f"None (never compress), got {value!r:.40}")
    return value


class _Codecs(threading.local):
    """A compressor and a decompressor per thread (their objects must not be shared by threads;
    making one costs about as much as compressing 20 KB)."""

    def __init__(self) -> None:
        # the frame records the text's size, so a reader allocates its result once
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


def pack(text: str, compress_above: int | None, utf8: bytes | None = None) -> Stored:
    """``text`` as stored: compressed when its UTF-8 is longer than ``compress_above`` bytes and
    smaller so (``utf8``: those bytes, if the caller has them: encoding 20 KB costs ~40 µs)."""
    data = text.encode("utf-8") if utf8 is None else utf8
    if compress_above is None or len(data) <= compress_above:
        return as_text(text, data)
    packed = _codecs.compressor.compress(data)
    return Stored(None, packed, len(packed)) if len(packed) < len(data) else as_text(text, data)


def text_of(row: dict[str, Any]) -> str | None:
    """The JSON text of an artifact row (``content`` and ``packed`` as read), or None if it has none."""
    packed = row.get("packed")
    if packed is None:
        return row.get("content")
    data = bytes(packed)
    if data.startswith(ZSTD_MAGIC):
        return _codecs.decompressor.decompress(data).decode("utf-8")
    return zlib.decompress(data).decode("utf-8")  # packed by a version before Zstandard
