"""Cron expressions mean what crontab(5) says, and the APScheduler form fires at those times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from progressive_cli.config import cron

VALID = [
    "* * * * *", "0 7 * * 1", "*/15 9-17 * * mon-fri", "0 0 1 * *", "30 6 * * 0", "30 6 * * 7",
    "0 0 * * sun", "0 12 1,15 * *", "5/10 * * * *", "0 0 L * *".replace("L", "28"), "0-59/30 * * jan-mar *",
    "0 0 * * MON-FRI/2", "0 0 29 2 *", "  0   7  * *  1 ", "@daily", "@WEEKLY", "@hourly", "@monthly",
    "@yearly", "@annually", "@midnight", "0 0 * * 5-7",
]
INVALID = [
    ("61 * * * *", "minute field '61': 61 is outside 0-59"),
    ("* 24 * * *", "hour field '24': 24 is outside 0-23"),
    ("* * 0 * *", "day of month field '0': 0 is outside 1-31"),
    ("* * * 13 *", "month field '13': 13 is outside 1-12"),
    ("* * * * 8", "day of week field '8': 8 is outside 0-7"),
    ("* * * *", "has 5 fields"),
    ("* * * * * *", "has 5 fields"),
    ("*/0 * * * *", "a step of 0 is not allowed"),
    ("*/60 * * * *", "step 60 is larger than the field's range 0-59"),
    ("5-1 * * * *", "range 5-1 runs backwards"),
    ("* * * * fri-mon", "range fri-mon runs backwards"),
    ("* * * foo *", "'foo' is not a number or a name"),
    ("1,,2 * * * *", "empty list item"),
    ("@reboot", "unknown macro '@reboot'"),
    ("٣ * * * *", "'٣' is not a number"),
    ("1/x * * * *", "step 'x' is not a number"),
    ("", "has 5 fields"),
]


@pytest.mark.parametrize("expression", VALID)
def test_valid(expression: str) -> None:
    assert cron.check(expression) is None


@pytest.mark.parametrize(("expression", "reason"), INVALID)
def test_invalid(expression: str, reason: str) -> None:
    problem = cron.check(expression)
    assert problem is not None and reason in problem


def test_sets() -> None:
    spec = cron.parse("*/20 9-11 1,15 jan-mar/2 mon-fri")
    assert spec.minutes == {0, 20, 40} and spec.hours == {9, 10, 11} and spec.days == {1, 15}
    assert spec.months == {1, 3} and spec.weekdays == {1, 2, 3, 4, 5}
    assert spec.day_restricted and spec.weekday_restricted
    assert cron.parse("0 0 * * 7").weekdays == {0} == cron.parse("0 0 * * 0").weekdays
    assert cron.parse("5/20 * * * *").minutes == {5, 25, 45}


def _trigger(expression: str) -> CronTrigger | OrTrigger:
    triggers = [CronTrigger(timezone=UTC, **f) for f in cron.apscheduler_fields(expression)]
    return triggers[0] if len(triggers) == 1 else OrTrigger(triggers)


def _next(expression: str, after: datetime, count: int = 1) -> list[datetime]:
    trigger, out, previous = _trigger(expression), [], None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        out.append(fire)
        previous, now = fire, fire + timedelta(seconds=1)
    return out


SUNDAY = datetime(2026, 11, 22, 0, 0, 30, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 7 * * 1", [datetime(2026, 11, 23, 7, 0, tzinfo=UTC)]),  # Monday, not Tuesday
        ("@weekly", [datetime(2026, 11, 29, 0, 0, tzinfo=UTC)]),  # Sunday midnight
        ("30 6 * * 7", [datetime(2026, 11, 22, 6, 30, tzinfo=UTC)]),  # 7 is Sunday too
        ("0 9 * * mon-fri", [datetime(2026, 11, 23, 9, tzinfo=UTC), datetime(2026, 11, 24, 9, tzinfo=UTC)]),
        # both day fields restricted: the 1st of the month OR any Friday
        ("0 0 1 * fri", [datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
                         datetime(2026, 12, 4, tzinfo=UTC)]),
        ("0 0 */10 * *", [datetime(2026, 12, 1, tzinfo=UTC)]),  # `*` day field: no OR with weekdays
        ("*/20 * * * *", [datetime(2026, 11, 22, 0, 20, tzinfo=UTC), datetime(2026, 11, 22, 0, 40, tzinfo=UTC)]),
        ("0 8 1 * *", [datetime(2026, 12, 1, 8, tzinfo=UTC)]),  # the shipped monthly budget review
    ],
)
def test_apscheduler_form_fires_as_crontab_says(expression: str, expected: list[datetime]) -> None:
    assert _next(expression, SUNDAY, len(expected)) == expected


def _matches(spec: cron.CronSpec, t: datetime) -> bool:
    weekday = (t.weekday() + 1) % 7  # Python: Monday 0 -> cron: Sunday 0
    if spec.day_restricted and spec.weekday_restricted:
        day_ok = t.day in spec.days or weekday in spec.weekdays
    else:
        day_ok = t.day in spec.days and weekday in spec.weekdays
    return t.minute in spec.minutes and t.hour in spec.hours and t.month in spec.months and day_ok


def _brute_next(spec: cron.CronSpec, after: datetime, limit_days: int = 40) -> datetime | None:
    t = after.replace(second=0, microsecond=0)
    if t < after:
        t += timedelta(minutes=1)  # the first whole minute at or after `after`
    end = after + timedelta(days=limit_days)
    while t < end:
        if _matches(spec, t):
            return t
        t += timedelta(minutes=1)
    return None


def _field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    token = number | st.sampled_from(names) if names else number
    part = st.one_of(
        st.just("*"),
        token,
        st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda p: f"{min(p)}-{max(p)}"),
        st.integers(1, max(high - low, 1)).map(lambda s: f"*/{s}"),
    )
    return st.lists(part, min_size=1, max_size=3).map(",".join)


crontabs = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12, cron.MONTHS), _field(0, 7, cron.WEEKDAYS)
).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(expression=crontabs, offset=st.integers(0, 365 * 24 * 60))
def test_apscheduler_form_agrees_with_a_brute_force_search(expression: str, offset: int) -> None:
    if cron.check(expression) is not None:
        return  # e.g. a list whose star item makes another item redundant is still valid; others skip
    spec = cron.parse(expression)
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=offset)
    expected = _brute_next(spec, start)
    if expected is None:
        return  # nothing within the search window (e.g. February 30th never comes)
    assert _next(expression, start)[0] == expected


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="0123456789*/-,abcdefghijklmnopqrstuvwxyz@ ", max_size=30))
def test_check_never_raises_and_valid_means_apscheduler_accepts(text: str) -> None:
    problem = cron.check(text)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        _trigger(text)  # the translated form is always accepted
