"""When a schedule's ticks fall, and which of the due ones fire: pure (no database, no clock).

A schedule ticks by a 5-field cron expression read in an IANA time zone (parsed by
cronsim), every N seconds, or once at a given time.  Times are epoch milliseconds (the
tables' unit).  Cron across daylight saving time follows cronsim (Debian cron's rule): a
local time skipped in spring fires once, at the first minute after the gap; a local time
that happens twice in autumn fires once for a daily expression (the first), and at both
instants for an expression naming every hour.
"""
import enum
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .dag import check_whole
from .exceptions import InvalidInputError
from .ids import check_text

MIN_EVERY_SECONDS = 10              # the floor of `every`; cron's floor is its own: once a minute
MAX_EVERY_SECONDS = 366 * 86_400    # a tick at least once a year
MAX_CRON = 255                      # characters: the model's str(255)
MAX_ZONE = 64                       # characters of a zone name: str(64)
# a due tick fires "on time" within this of its time; an older one was missed (catch_up decides)
ON_TIME_MS = 30_000
MAX_TICKS_PER_FIRE = 1_000          # ticks of one schedule fired by one pass (catch_up all): the rest next poll
CRON_FIELDS = 5


class Overlap(enum.StrEnum):
    """What a tick does while the schedule's last task is still unfinished."""

    SKIP = "skip"                        # no task for this tick
    QUEUE = "queue"                      # the tick waits until that task ends, then fires
    CANCEL_PREVIOUS = "cancel_previous"  # that task is cancelled, the tick fires


class CatchUp(enum.StrEnum):
    """What happens to ticks missed (due for more than ON_TIME_MS) while no process ran."""

    NONE = "none"   # none fires
    ONCE = "once"   # one task for all of them (for the latest)
    ALL = "all"     # a task for each


def zone(name: object) -> ZoneInfo:
    """The IANA time zone ``name``, or an InvalidInputError."""
    check_text(name, "timezone", MAX_ZONE)
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a zone key at all (a path, ...)
        raise InvalidInputError(f"timezone must be an IANA time zone such as 'Asia/Shanghai' or 'UTC', "
                                f"got {str(name)[:64]!r}") from None


def host_zone_name() -> str:
    """The host's IANA time zone (schedules' default unless the host configures ``timezone``):
    $TZ if it names one, else /etc/timezone, else where /etc/localtime points; else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            candidates.append(fh.read().strip())
    except OSError:
        pass
    link = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in link:
        candidates.append(link.split("/zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                zone(name)
                return name
            except InvalidInputError:
                continue
    return "UTC"


def check_cron(expression: object) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), or an InvalidInputError."""
    check_text(expression, "cron", MAX_CRON)
    text = " ".join(str(expression).split())
    if len(text.split(" ")) != CRON_FIELDS:
        raise InvalidInputError(f"cron must have 5 fields (minute hour day-of-month month day-of-week: at most "
                                f"once a minute), got {text[:80]!r}")
    try:
        next(CronSim(text, datetime(2000, 1, 1, tzinfo=timezone.utc)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidInputError(f"cron {text[:80]!r} cannot be read: {exc or 'it never fires'}") from None
    return text


def check_every(seconds: object) -> int:
    return check_whole(seconds, "every", MIN_EVERY_SECONDS, MAX_EVERY_SECONDS)


def parse_at(value: object, tz: ZoneInfo) -> int:
    """A one-shot time: a datetime or an ISO-8601 string (without an offset: in ``tz``), as epoch ms."""
    if isinstance(value, str):
        text = check_text(value, "at", 64)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(f"at must be an ISO-8601 date and time such as '2026-12-24T18:00', "
                                    f"got {text!r}") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"at must be a datetime or an ISO-8601 string, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class Timing:
    """How a schedule ticks: exactly one of cron, every_seconds, at_ms."""

    cron: str | None
    every_seconds: int | None
    at_ms: int | None
    timezone: str

    def first_after(self, ms: int, anchor: int | None = None) -> int | None:
        """The first tick strictly after ``ms``; None if there is none (a one-shot past its time).
        ``every`` counts from ``anchor`` (a tick) when given, else from ``ms``."""
        if self.at_ms is not None:
            return self.at_ms if self.at_ms > ms else None
        if self.every_seconds is not None:
            step = self.every_seconds * 1000
            if anchor is None or anchor > ms:
                return ms + step if anchor is None else anchor
            return anchor + ((ms - anchor) // step + 1) * step
        assert self.cron is not None
        start = datetime.fromtimestamp(ms / 1000, tz=zone(self.timezone))
        return int(next(CronSim(self.cron, start)).timestamp() * 1000)

    def due(self, first: int, now: int, limit: int = MAX_TICKS_PER_FIRE) -> list[int]:
        """The ticks from ``first`` (itself a tick) up to ``now``, at most ``limit`` (the earliest)."""
        ticks: list[int] = []
        tick: int | None = first
        while tick is not None and tick <= now and len(ticks) < limit:
            ticks.append(tick)
            tick = self.first_after(tick, anchor=tick)
        return ticks

    def latest(self, first: int, now: int) -> int | None:
        """The last tick from ``first`` (itself a tick) up to ``now``, None if ``first`` is later:
        without walking the ticks between (a gap may hold a great many)."""
        if first > now:
            return None
        if self.at_ms is not None:
            return first
        if self.every_seconds is not None:
            step = self.every_seconds * 1000
            return first + (now - first) // step * step
        assert self.cron is not None
        end = datetime.fromtimestamp((now + 1) / 1000, tz=zone(self.timezone))
        return max(first, int(next(CronSim(self.cron, end, reverse=True)).timestamp() * 1000))


@dataclass(frozen=True)
class TickPlan:
    """Of the due ticks: those that fire, and the next fire time after them (None: no tick left)."""

    fire: list[int]
    next_fire_at: int | None


def plan_ticks(timing: Timing, first: int, now: int, catch_up: str) -> TickPlan:
    """Which ticks due at ``now`` (``first`` and the later ones up to ``now``) fire: the latest,
    if it is on time (within ON_TIME_MS of ``now``); of the missed ones, what ``catch_up`` says
    (all: each, in MAX_TICKS_PER_FIRE a pass; once: one, for the latest; none: nothing)."""
    if catch_up == CatchUp.ALL:
        due = timing.due(first, now)
        return TickPlan(due, timing.first_after(due[-1], anchor=due[-1]) if due else first)
    latest = timing.latest(first, now)
    if latest is None:
        return TickPlan([], first)
    after = timing.first_after(latest, anchor=latest)
    if catch_up == CatchUp.ONCE or now - latest <= ON_TIME_MS:
        return TickPlan([latest], after)
    return TickPlan([], after)


TITLE_FIELDS = re.compile(r"\{(tick|date|time)\}")


def render_title(template: str, tick_ms: int, tz_name: str) -> str:
    """A tick's task title: ``{tick}``, ``{date}``, ``{time}`` become the tick's local time in the
    schedule's zone; any other text stays as it is (a template is never evaluated)."""
    local = datetime.fromtimestamp(tick_ms / 1000, tz=zone(tz_name))
    values = {"tick": local.isoformat(timespec="minutes"), "date": local.date().isoformat(),
              "time": local.strftime("%H:%M")}
    return TITLE_FIELDS.sub(lambda m: values[m.group(1)], template)
