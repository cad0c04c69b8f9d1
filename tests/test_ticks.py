"""ticks.py, pure: when ticks fall (cron in a zone across DST, every, at) and which due ones fire."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from pipeline_service import InvalidInputError
from pipeline_service.ticks import (ON_TIME_MS, MAX_TICKS_PER_FIRE, Timing, check_cron, host_zone_name,
                                    plan_ticks, render_title, zone)

BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = 60_000
DST_2026 = int(datetime(2026, 3, 28, tzinfo=BERLIN).timestamp() * 1000)  # spring forward on the 29th
FALL_2026 = int(datetime(2026, 10, 24, tzinfo=BERLIN).timestamp() * 1000)  # fall back on the 25th


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(cron=st.sampled_from(["0 * * * *", "30 2 * * *", "*/7 1-3 * * *", "0 0 * * 1", "15 3 29 3 *"]),
       start=st.sampled_from([DST_2026, FALL_2026]), offset=st.integers(0, 3 * 86_400_000),
       span=st.integers(0, 2 * 86_400_000))
def test_the_latest_due_tick_is_the_last_one_walked_to(cron, start, offset, span):
    """``latest`` (one reverse step, for catch_up none/once) agrees with walking the ticks
    (``due``, for catch_up all), across both of Berlin's DST changes."""
    timing = Timing(cron, None, None, "Europe/Berlin")
    first = timing.first_after(start + offset)
    assert first is not None
    walked = timing.due(first, first + span, limit=10_000)
    assert timing.latest(first, first + span) == walked[-1]
    assert all(b > a for a, b in zip(walked, walked[1:]))


def test_every_counts_elapsed_time_from_its_anchor():
    timing = Timing(None, 600, None, "Europe/Berlin")
    assert timing.first_after(1_000) == 601_000
    assert timing.first_after(1_000_000, anchor=400_000) == 1_600_000  # 1,000,000 is a tick itself: not after it
    assert timing.first_after(1_000_001, anchor=400_000) == 1_600_000
    assert timing.latest(400_000, 2_000_000) == 1_600_000
    assert Timing(None, 600, None, "UTC").due(0, 1_800_000) == [0, 600_000, 1_200_000, 1_800_000]


def test_a_one_shot_has_one_tick():
    timing = Timing(None, None, 5_000, "UTC")
    assert timing.first_after(0) == 5_000 and timing.first_after(5_000) is None
    assert plan_ticks(timing, 5_000, 5_000 + ON_TIME_MS, "none").fire == [5_000]
    late = plan_ticks(timing, 5_000, 5_000 + ON_TIME_MS + 1, "none")
    assert late.fire == [] and late.next_fire_at is None


@pytest.mark.parametrize("catch_up, fired", [("none", []), ("once", [5]), ("all", [0, 1, 2, 3, 4, 5])])
def test_plan_ticks_after_a_gap(catch_up, fired):
    timing = Timing(None, 60, None, "UTC")
    now = 5 * MINUTE + ON_TIME_MS + 1  # the latest tick (5) is missed too
    plan = plan_ticks(timing, 0, now, catch_up)
    assert plan.fire == [i * MINUTE for i in fired] and plan.next_fire_at == 6 * MINUTE


def test_catch_up_all_fires_a_long_gap_in_passes():
    timing = Timing(None, 10, None, "UTC")
    now = 2 * MAX_TICKS_PER_FIRE * 10_000
    plan = plan_ticks(timing, 0, now, "all")
    assert len(plan.fire) == MAX_TICKS_PER_FIRE and plan.next_fire_at == MAX_TICKS_PER_FIRE * 10_000
    none = plan_ticks(timing, 0, now, "none")  # the latest is on time: it alone fires, without walking
    assert none.fire == [now] and none.next_fire_at == now + 10_000


def test_bad_cron_and_zones_are_refused():
    assert check_cron("  */5   *  * * MON ") == "*/5 * * * MON"
    for bad in ("* * * *", "* * * * * *", "60 * * * *", "0 0 31 2 *", "@hourly", "", 5):
        with pytest.raises(InvalidInputError, match="cron"):
            check_cron(bad)
    for bad in ("Mars/Olympus", "../etc/passwd", "/etc/localtime", "", None):
        with pytest.raises(InvalidInputError, match="timezone"):
            zone(bad)
    zone(host_zone_name())  # whatever the machine, the default is a zone


def test_titles_take_the_ticks_local_time_and_nothing_else():
    tick = int(datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN).timestamp() * 1000)
    assert render_title("{date} at {time} ({tick})", tick, "Europe/Berlin") == \
        "2026-03-29 at 03:00 (2026-03-29T03:00+02:00)"
    assert render_title("{tick.__class__} {0} {unknown} {{date}}", tick, "UTC") == \
        "{tick.__class__} {0} {unknown} {2026-03-29}"
