"""Validation of five-field cron expressions, without importing a scheduler.

The daemon schedules with APScheduler's ``CronTrigger.from_crontab``; this module accepts
exactly the expressions that call accepts (a test checks the two agree), so that
``progressive validate`` can reject a bad expression without paying for the import.

It follows APScheduler 3.x rule for rule, quirks included:

* day of week counts from Monday: ``0`` and ``mon`` are Monday, ``6`` and ``sun`` Sunday;
* a step must not exceed the span it steps over (``*/60`` minutes and ``59/1`` are refused;
  ``0-0/5`` spans the whole field, as in APScheduler);
* month and weekday *names* take no step and only the leading letters are read, so
  ``jan/2`` and ``mon5`` are accepted and mean ``jan`` and ``mon``;
* the day-of-month field also accepts ``last`` (and, like APScheduler, anything starting with it).
"""

from __future__ import annotations

import re

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(MONTHS, 1)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(WEEKDAYS)}),
)
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

# The patterns APScheduler's field compilers use, in the order it tries them (re.match semantics).
_ALL = re.compile(r"\*(?:/(?P<step>\d+))?$")
_RANGE = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$")
_NAMES = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE)
_LAST = re.compile(r"last", re.IGNORECASE)


def expand(expression: str) -> str:
    """Collapse whitespace and replace a macro (``@daily``...) with its five fields."""
    text = " ".join(expression.split())
    return MACROS.get(text.lower(), text)


def check(expression: str) -> str | None:
    """Return None if ``expression`` is valid, else a one-line reason."""
    fields = expand(expression).split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}"
    for value, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        for part in value.split(","):
            try:
                _check_part(part, low, high, names, name == "day of month")
            except ValueError as exc:
                return f"{name} field '{value}': {exc}"
    return None


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)  # ValueError past Python's 4300-digit limit


def _check_part(part: str, low: int, high: int, names: dict[str, int], day_of_month: bool) -> None:
    if match := _ALL.match(part):
        step = _int(match["step"])
        _check_step(step, high - low)
        return
    if match := _RANGE.match(part):
        first, last, step = int(match["first"]), _int(match["last"]), _int(match["step"])
        _check_step(step, high - low)
        if last is None and step is None:
            last = first
        if last is not None and first > last:
            raise ValueError(f"range {first}-{last} runs backwards")
        if first < low:
            raise ValueError(f"{first} is below the minimum {low}")
        if last is not None and last > high:
            raise ValueError(f"{last} is above the maximum {high}")
        if step is not None:
            span = (last or high) - first  # APScheduler reads a last value of 0 as "up to the maximum"
            if step > span:
                raise ValueError(f"step {step} is larger than the span {span} it steps over")
        return
    if names and (match := _NAMES.match(part)):
        first_name, last_name = match["first"], match["last"]
        begin = _name(first_name, names)
        end = _name(last_name, names) if last_name else begin
        if begin > end:
            raise ValueError(f"range {first_name}-{last_name} runs backwards")
        return
    if day_of_month and _LAST.match(part):
        return
    if part == "":
        raise ValueError("empty entry in a list")
    raise ValueError(f"cannot read '{part}'")


def _check_step(step: int | None, span: int) -> None:
    if step == 0:
        raise ValueError("a step of 0 is not allowed")
    if step is not None and step > span:
        raise ValueError(f"step {step} is larger than the span {span} it steps over")


def _name(text: str, names: dict[str, int]) -> int:
    number = names.get(text.lower())
    if number is None:
        raise ValueError(f"'{text}' is not one of {', '.join(names)}")
    return number
