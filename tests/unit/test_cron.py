"""Cron validation must accept exactly what APScheduler 3.x ``CronTrigger.from_crontab`` accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from progressive_cli.config import cron


def apscheduler_accepts(expression: str) -> bool:
    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError:
        return False
    return True


def target(expression: str) -> str:
    """What the daemon hands APScheduler: macros expanded, anything else as written."""
    return cron.expand(expression) if expression.strip().lower() in cron.MACROS else expression


VALID = [
    ("* * * * *", "every minute"),
    ("0 0 * * *", "midnight"),
    ("*/15 * * * *", "step on *"),
    ("*/59 * * * *", "largest step for minutes (max - min)"),
    ("0 */23 * * *", "largest step for hours"),
    ("0 9-17 * * mon-fri", "hour range and weekday-name range"),
    ("0 9-17/2 * * 0-4", "stepped range; numeric weekdays 0-6"),
    ("5,10,15 * * * *", "list"),
    ("0,30 8-10,14 1,15 * *", "lists of ranges"),
    ("59 23 31 12 6", "every field at its maximum"),
    ("0 0 1 1 0", "every field at its minimum"),
    ("0 0 1 jan *", "month name"),
    ("0 0 1 JAN-DEC *", "upper-case names"),
    ("0 0 1 Jan,Jul *", "list of month names"),
    ("0 0 * * sun", "weekday name"),
    ("0 0 * * sat,sun", "list of weekday names"),
    ("0 0 * * mon,3-4", "names and numbers mixed in a list"),
    ("58/1 * * * *", "start/step: 58 leaves a span of 1"),
    ("5/10 * * * *", "start/step"),
    ("0-0/59 * * * *", "APScheduler reads a last value of 0 as the field maximum"),
    ("00 07 * * *", "leading zeros"),
    ("0 0 last * *", "last day of month"),
    ("0 0 LAST * *", "last, any case"),
    ("0 0 * jan/2 *", "APScheduler reads only the name; the step is ignored"),
    ("0 0 * * mon5", "APScheduler reads only the leading letters"),
    ("0 0 * * mon-", "APScheduler reads only the leading name"),
    ("  0   0\t* *  *  ", "any whitespace between fields"),
    ("0 0 \u0661 * *", "Unicode decimal digits (ARABIC-INDIC ONE), as Python's int() reads them"),
]

INVALID = [
    ("", "5 fields", "no fields"),
    ("* * * *", "got 4", "four fields"),
    ("* * * * * *", "got 6", "six fields (seconds are not supported)"),
    ("60 * * * *", "minute field", "minute above 59"),
    ("* 24 * * *", "hour field", "hour above 23"),
    ("* * 0 * *", "day of month field", "day below 1"),
    ("* * 32 * *", "day of month field", "day above 31"),
    ("* * * 0 *", "month field", "month below 1"),
    ("* * * 13 *", "month field", "month above 12"),
    ("* * * * 7", "day of week field", "7 is not Sunday in APScheduler 3: weekdays are 0-6"),
    ("*/0 * * * *", "a step of 0", "zero step"),
    ("*/60 * * * *", "step 60", "step larger than max - min"),
    ("0 */24 * * *", "step 24", "step larger than max - min"),
    ("59/1 * * * *", "step 1", "no span left to step over"),
    ("5-10/6 * * * *", "step 6", "step larger than the range"),
    ("0/0 * * * *", "a step of 0", "zero step after a start"),
    ("5-3 * * * *", "runs backwards", "backwards range"),
    ("* * * * sat-mon", "runs backwards", "backwards weekday range"),
    ("* * * dec-jan *", "runs backwards", "backwards month range"),
    ("1,,2 * * * *", "empty entry", "empty list entry"),
    ("1, * * * *", "empty entry", "trailing comma"),
    ("a * * * *", "cannot read", "letters in a numeric field"),
    ("mon * * * *", "cannot read", "names only in month and weekday fields"),
    ("* * * * funday", "'funday'", "unknown weekday name"),
    ("* * * foo *", "'foo'", "unknown month name"),
    ("* * * * mon-xyz", "'xyz'", "unknown name at the end of a range"),
    ("* * * * monday", "'monday'", "full weekday names are not names APScheduler knows"),
    ("-1 * * * *", "cannot read", "negative number"),
    ("1- * * * *", "cannot read", "open range"),
    ("*-5 * * * *", "cannot read", "range from *"),
    ("1-5-7 * * * *", "cannot read", "two dashes"),
    ("*/ * * * *", "cannot read", "missing step"),
    ("? * * * *", "cannot read", "Quartz '?'"),
    ("* * L * *", "cannot read", "Quartz 'L'"),
    ("* * * * 1#2", "cannot read", "Quartz '#'"),
    ("* * * * last", "'last'", "last only in day of month"),
    ("1.5 * * * *", "cannot read", "decimal"),
    ("@reboot", "got 1", "unsupported macro"),
    ("@daily extra", "got 2", "macro with extra text"),
    ("0 0 ² * *", "cannot read", "superscript digits are not decimal digits"),
]


@pytest.mark.parametrize(("expression", "why"), VALID)
def test_valid(expression: str, why: str) -> None:
    assert cron.check(expression) is None, why
    assert apscheduler_accepts(expression), why


@pytest.mark.parametrize(("expression", "fragment", "why"), INVALID)
def test_invalid(expression: str, fragment: str, why: str) -> None:
    problem = cron.check(expression)
    assert problem is not None, why
    assert fragment in problem, (problem, why)
    assert "\n" not in problem
    assert not apscheduler_accepts(target(expression)), why


def test_reason_names_the_field_and_value() -> None:
    assert cron.check("0 25 * * *") == "hour field '25': 25 is above the maximum 23"
    assert cron.check("0 0 * * mon,fooday") == (
        "day of week field 'mon,fooday': 'fooday' is not one of mon, tue, wed, thu, fri, sat, sun"
    )


@pytest.mark.parametrize("macro", sorted(cron.MACROS))
def test_macros(macro: str) -> None:
    assert cron.check(macro) is None
    assert cron.check(macro.upper()) is None
    assert cron.check(f"  {macro}\n") is None
    assert cron.expand(macro) == cron.MACROS[macro]
    assert cron.check(cron.MACROS[macro]) is None
    assert apscheduler_accepts(cron.expand(macro))


def test_macros_fire_when_expected() -> None:
    now = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)  # a Saturday

    def next_fire(macro: str) -> datetime:
        trigger = CronTrigger.from_crontab(cron.expand(macro), timezone="UTC")
        return trigger.get_next_fire_time(None, now)

    assert next_fire("@hourly") == datetime(2026, 3, 14, 11, 0, tzinfo=UTC)
    assert next_fire("@daily") == datetime(2026, 3, 15, 0, 0, tzinfo=UTC)
    assert next_fire("@midnight") == next_fire("@daily")
    assert next_fire("@monthly") == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    assert next_fire("@yearly") == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert next_fire("@annually") == next_fire("@yearly")
    weekly = next_fire("@weekly")
    # "0 0 * * 0": APScheduler 3 reads weekday 0 as Monday (classic cron: Sunday); either way, weekly at midnight
    assert weekly.time() == datetime.min.time() and weekly.weekday() in (0, 6)
    assert (weekly - now).days < 7


def test_expand_keeps_non_macros_as_written() -> None:
    assert cron.expand("  0  9 * *   MON-FRI ") == "0 9 * * MON-FRI"
    assert cron.expand("@Daily") == "0 0 * * *"


# --- cross-check against APScheduler --------------------------------------------------------------------
# Numbers and steps cluster at the edges of the fields, where off-by-one mistakes live.
EDGES = [0, 1, 2, 5, 6, 7, 11, 12, 13, 22, 23, 24, 29, 30, 31, 32, 58, 59, 60, 61]
numbers = st.one_of(
    st.sampled_from(EDGES).map(str),
    st.integers(0, 99).map(str),
    st.sampled_from(["00", "07", "-1", "100", "1" * 30, "\u0661", "\u0663", "\u00b2", ""]),
)
names = st.sampled_from(
    ["mon", "fri", "sun", "sat", "MON", "Tue", "jan", "dec", "Feb", "JUL", "last", "LAST", "foo", "L", "x",
     "monday", "lastday", "mon5", "ja", "\u017fun", "\u212aan"]
)
atoms = numbers | names | st.just("*")
steps = st.one_of(st.none(), st.sampled_from(EDGES).map(str), st.sampled_from(["", "x", "\u0662", "00"]))


def _part(first: str, last: str | None, step: str | None) -> str:
    return first + (f"-{last}" if last is not None else "") + (f"/{step}" if step is not None else "")


parts = st.builds(_part, atoms, st.none() | atoms, steps) | st.sampled_from(
    ["", "?", "#", "1#2", "*x", "L", "W", "1W", "5L", "*/", "/5", "-"]
)
fields = st.lists(parts, min_size=1, max_size=3).map(",".join)
spaces = st.sampled_from([" ", "  ", "\t", " \t "])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Mostly five fields of which all but one or two are '*', so that whether the whole is valid
    turns on the interesting part (a random five fields are nearly always invalid twice over)."""
    count = draw(st.sampled_from([5] * 12 + [4, 6, 0, 1]))
    values = ["*"] * count
    for _ in range(draw(st.integers(1, 2))):
        if count:
            values[draw(st.integers(0, count - 1))] = draw(fields)
    separators = [draw(spaces) for _ in values]
    return draw(st.sampled_from(["", " "])) + "".join(v + sep for v, sep in zip(values, separators, strict=True))


macros = st.sampled_from([*cron.MACROS, "@reboot", "@DAILY", " @hourly ", "@", "@weekly x"])


@settings(max_examples=300, deadline=None)
@given(expression=expressions() | macros)
def test_agrees_with_apscheduler(expression: str) -> None:
    ours = cron.check(expression)
    assert (ours is None) == apscheduler_accepts(target(expression)), (expression, ours)


@settings(max_examples=200, deadline=None)
@given(
    field=st.text(alphabet=st.sampled_from(list("0123456789*-/,lastmonjanLMJ?\u0661\u00b2")), max_size=12),
    where=st.integers(0, 4),
)
def test_agrees_with_apscheduler_on_any_field_text(field: str, where: int) -> None:
    values = ["*"] * 5
    values[where] = field
    expression = " ".join(values)
    ours = cron.check(expression)
    assert (ours is None) == apscheduler_accepts(expression), (expression, ours)
