"""Cron ticks in a time zone: daylight-saving changes never double or skip a daily run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chessstats.scheduler.cron import latest_tick_until, next_tick

NY = ZoneInfo("America/New_York")  # 2026: clocks forward 8 March 02:00, back 1 November 02:00


def ticks(expr: str, start: datetime, end: datetime, tz: ZoneInfo | str = NY) -> list[datetime]:
    out, t = [], start
    while True:
        t = next_tick(expr, t, tz)
        if t > end:
            return out
        out.append(t)


def local_days(instants: list[datetime], tz: ZoneInfo = NY) -> list[str]:
    return [t.astimezone(tz).date().isoformat() for t in instants]


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "0 3 * * *", "59 1 * * *"])
def test_spring_forward_daily_runs_once_a_day(expr: str) -> None:
    got = ticks(expr, datetime(2026, 3, 6, 12, tzinfo=UTC), datetime(2026, 3, 10, 12, tzinfo=UTC))
    assert local_days(got) == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]


def test_spring_forward_skipped_wall_time_runs_after_the_jump() -> None:
    got = ticks("30 2 * * *", datetime(2026, 3, 8, 0, tzinfo=UTC), datetime(2026, 3, 8, 23, tzinfo=UTC))
    assert [t.astimezone(NY).strftime("%H:%M %Z") for t in got] == ["03:30 EDT"]


@pytest.mark.parametrize("expr", ["30 1 * * *", "0 1 * * *", "59 1 * * *", "0 2 * * *"])
def test_fall_back_daily_runs_once_a_day(expr: str) -> None:
    got = ticks(expr, datetime(2026, 10, 30, 12, tzinfo=UTC), datetime(2026, 11, 3, 12, tzinfo=UTC))
    assert local_days(got) == ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    assert len(set(got)) == len(got)


def test_fall_back_repeated_wall_time_runs_at_first_occurrence() -> None:
    got = ticks("30 1 * * *", datetime(2026, 11, 1, 0, tzinfo=UTC), datetime(2026, 11, 1, 23, tzinfo=UTC))
    assert [t.astimezone(NY).strftime("%H:%M %Z") for t in got] == ["01:30 EDT"]


def test_every_30_minutes_follows_real_time_across_both_changes() -> None:
    for start in (datetime(2026, 3, 8, 4, tzinfo=UTC), datetime(2026, 11, 1, 3, tzinfo=UTC)):
        got = ticks("*/30 * * * *", start, start + timedelta(hours=6))
        gaps = {b - a for a, b in zip(got, got[1:], strict=False)}
        assert gaps == {timedelta(minutes=30)}, start
        assert len(got) == 12


def test_weekly_and_utc_default() -> None:
    start = datetime(2026, 11, 29, 12, tzinfo=UTC)  # a Sunday
    assert next_tick("0 4 * * 2", start) == datetime(2026, 12, 1, 4, tzinfo=UTC)
    assert next_tick("0 2 * * 0", start) == datetime(2026, 12, 6, 2, tzinfo=UTC)


def test_seconds_field_for_tests() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert ticks("* * * * * */2", start, start + timedelta(seconds=7), "UTC") == [
        start + timedelta(seconds=s) for s in (2, 4, 6)]


def test_latest_tick_collapses_missed_ticks() -> None:
    start = datetime(2026, 11, 29, 0, 1, tzinfo=UTC)
    last, count = latest_tick_until("*/30 * * * *", start, start + timedelta(hours=3))
    assert (last, count) == (datetime(2026, 11, 29, 3, 0, tzinfo=UTC), 6)


def test_invalid_expression() -> None:
    with pytest.raises(ValueError, match="invalid cron"):
        next_tick("not a cron", datetime(2026, 1, 1, tzinfo=UTC))
