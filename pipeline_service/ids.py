"""Identifiers and time stamps, in the forms stored in the tables."""
import time
from datetime import datetime, timezone

from appPublic.uniqueID import getID


def new_id():
    """A 21-character nanoid, the ecosystem's id form (fits the str(32) id columns).

    Never one that starts with '-': an id is passed to command lines, where a
    leading '-' reads as an option.
    """
    while True:
        value = getID()
        if not value.startswith("-"):
            return value


def now_ms():
    """Wall-clock time as integer epoch milliseconds (the tables' time unit)."""
    return time.time_ns() // 1_000_000


def iso(ms):
    """Epoch milliseconds as an ISO-8601 UTC string for the API, None stays None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
