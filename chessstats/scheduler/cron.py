"""Cron arithmetic in a time zone, with daylight-saving rules that never double or skip a daily run.

Expressions are croniter's: 5 fields (minute hour day month weekday) or 6 (a trailing seconds
field, used by tests). They are read in *local wall-clock time* of the scheduler's zone, and
each local time maps to instants like this:

* An **hour-specific** expression (hour field without ``*``, e.g. ``0 3 * * *``):
  - a wall time that occurs twice (the repeated hour when clocks go back) fires once, at its
    first occurrence;
  - a wall time that does not exist (the hour skipped when clocks go forward) fires once, at
    the same offset after the jump (02:30 → 03:30 new time).
* An **every-hour** expression (hour field with ``*``, e.g. ``*/2 * * * *``): it follows real
  time — a repeated wall time fires at both occurrences, a skipped one does not exist.

All instants are aware datetimes in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

#: Look back this far in local time when searching the next tick (covers a repeated hour).
_LOOKBACK = timedelta(hours=3)
_MAX_STEPS = 100_000


def _every_hour(expr: str) -> bool:
    fields = expr.split()
    return len(fields) >= 2 and "*" in fields[1]


def _instants(naive: datetime, tz: ZoneInfo, every_hour: bool) -> list[datetime]:
    """The UTC instants of local wall time ``naive`` under the rules above."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    exists = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive
    if not exists:  # in a gap: fold=0 reads it with the offset before the jump → after the jump
        return [] if every_hour else [first.astimezone(UTC)]
    if first.utcoffset() != second.utcoffset():  # repeated wall time
        if every_hour:
            return [first.astimezone(UTC), second.astimezone(UTC)]
        return [first.astimezone(UTC)]
    return [first.astimezone(UTC)]


def next_tick(expr: str, after: datetime, tz: ZoneInfo | str = "UTC") -> datetime:
    """The first tick of ``expr`` strictly after the instant ``after`` (aware), in UTC.

    Raises:
        ValueError: ``expr`` is not a valid cron expression, or has no tick in ~10 000 steps.
    """
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    if not croniter.is_valid(expr):
        raise ValueError(f"invalid cron expression {expr!r}")
    every_hour = _every_hour(expr)
    after_utc = after.astimezone(UTC)
    # Look back in local time only near a change of offset: a wall time before ``after``'s may
    # then have a second occurrence after it.
    near_change = ((after_utc - _LOOKBACK).astimezone(zone).utcoffset()
                   != (after_utc + _LOOKBACK).astimezone(zone).utcoffset())
    lookback = _LOOKBACK if near_change else timedelta(0)
    start = after_utc.astimezone(zone).replace(tzinfo=None) - lookback
    it = croniter(expr, start)
    best: datetime | None = None
    for _ in range(_MAX_STEPS):
        naive = it.get_next(datetime)
        for instant in _instants(naive, zone, every_hour):
            if instant > after_utc and (best is None or instant < best):
                best = instant
        # Once local time is well past the best candidate, nothing earlier can follow.
        if best is not None and naive - lookback >= best.astimezone(zone).replace(tzinfo=None):
            return best
    if best is not None:
        return best
    raise ValueError(f"cron expression {expr!r} has no tick after {after_utc.isoformat()}")


def latest_tick_until(expr: str, after: datetime, until: datetime, tz: ZoneInfo | str = "UTC",
                      limit: int = 100_000) -> tuple[datetime | None, int]:
    """The latest tick in ``(after, until]`` and how many ticks fell in it (at most ``limit``).

    Used for catch-up: however many ticks were missed, one run is made for the latest.
    """
    count, last, current = 0, None, after
    while count < limit:
        tick = next_tick(expr, current, tz)
        if tick > until:
            break
        count, last, current = count + 1, tick, tick
    return last, count
