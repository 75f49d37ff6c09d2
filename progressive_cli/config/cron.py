"""Validation of five-field cron expressions, without importing a scheduler.

The daemon schedules with APScheduler's ``CronTrigger.from_crontab``; this module accepts
exactly the expressions that call accepts (a test checks the two agree), so that
``progressive validate`` can reject a bad expression without paying for the import.
"""

from __future__ import annotations

import re

FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}),
)
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def expand(expression: str) -> str:
    text = " ".join(expression.strip().lower().split())
    return MACROS.get(text, text)


def check(expression: str) -> str | None:
    """Return None if ``expression`` is valid, else a one-line reason."""
    text = expand(expression)
    fields = text.split(" ")
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}"
    for value, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        for part in value.split(","):
            problem = _check_part(part, low, high, names)
            if problem:
                return f"{name} field '{value}': {problem}"
    return None


def _number(token: str, low: int, high: int, names: dict[str, int]) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ValueError(f"'{token}' is not a number")
    number = int(token)
    if not low <= number <= high:
        raise ValueError(f"{number} is outside {low}-{high}")
    return number


def _check_part(part: str, low: int, high: int, names: dict[str, int]) -> str | None:
    match = _PART.match(part)
    if not match:
        return f"cannot read '{part}'"
    body, step = match.groups()
    if step is not None and int(step) == 0:
        return "a step of 0 is not allowed"
    if step is not None and int(step) > high - low + 1 and body == "*":
        return f"step {step} is larger than the range"
    if body == "*":
        return None
    try:
        if "-" in body:
            first, last = (_number(t, low, high, names) for t in body.split("-"))
            if first > last:
                return f"range {body} runs backwards"
        else:
            _number(body, low, high, names)
    except ValueError as exc:
        return str(exc)
    return None
