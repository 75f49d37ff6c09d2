"""Five-field cron expressions with standard (Vixie cron) meaning, and their APScheduler form.

Operators write cron the way crontab(5) defines it: ``minute hour day-of-month month
day-of-week``; ``0`` and ``7`` are Sunday; names (``jan``, ``mon-fri``) are case-insensitive;
``*/n``, ``a-b/n`` and ``a/n`` step; and when both the day-of-month and the day-of-week
fields are restricted the job runs when *either* matches. Macros: ``@yearly``,
``@annually``, ``@monthly``, ``@weekly`` (Sunday), ``@daily``, ``@midnight``, ``@hourly``.

APScheduler 3 numbers weekdays from Monday and ANDs the two day fields, so handing it the
text would run jobs on the wrong days. :func:`apscheduler_fields` translates a parsed
expression into explicit ``CronTrigger`` keyword sets (two, to be OR-ed, when both day
fields are restricted). This module imports no scheduler, so ``validate`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 = sun
APS_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # APScheduler accepts names in any order
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# name, low, high, names (value for each name)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(MONTHS, 1)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(WEEKDAYS)}),
)


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronSpec:
    """The expanded sets of an expression. ``weekdays`` uses 0 = Sunday .. 6 = Saturday."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool


def expand(expression: str) -> str:
    """Collapse whitespace and replace a macro (``@daily``...) with its five fields."""
    text = " ".join(expression.split())
    return MACROS.get(text.lower(), text)


def parse(expression: str) -> CronSpec:
    text = expand(expression)
    if text.startswith("@"):
        raise CronError(f"unknown macro '{text.split()[0]}'; known: {', '.join(MACROS)}")
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}")
    sets: list[frozenset[int]] = []
    for value, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        try:
            sets.append(frozenset(v for part in value.split(",") for v in _part(part, low, high, names)))
        except CronError as exc:
            raise CronError(f"{name} field '{value}': {exc}") from None
    weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
    return CronSpec(sets[0], sets[1], sets[2], sets[3], weekdays,
                    day_restricted=not fields[2].startswith("*"), weekday_restricted=not fields[4].startswith("*"))


def check(expression: str) -> str | None:
    """None if ``expression`` is valid, else a one-line reason."""
    try:
        parse(expression)
    except CronError as exc:
        return str(exc)
    return None


def _number(token: str, low: int, high: int, names: dict[str, int]) -> int:
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    if not token.isascii() or not token.isdigit():
        raise CronError(f"'{token}' is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    if len(token) > 3:
        raise CronError(f"{token} is outside {low}-{high}")
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{value} is outside {low}-{high}")
    return value


def _part(part: str, low: int, high: int, names: dict[str, int]) -> range:
    if not part:
        raise CronError("empty list item")
    body, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isascii() or not step_text.isdigit() or len(step_text) > 3:
            raise CronError(f"step '{step_text}' is not a number")
        step = int(step_text)
        if step == 0:
            raise CronError("a step of 0 is not allowed")
        if step > high - low:
            raise CronError(f"step {step} is larger than the field's range {low}-{high}")
    if body == "*":
        return range(low, high + 1, step)
    first_text, dash, last_text = body.partition("-")
    first = _number(first_text, low, high, names)
    if dash:
        last = _number(last_text, low, high, names)
        if last < first:
            raise CronError(f"range {body} runs backwards")
    else:
        last = high if slash else first  # `a/n` steps from a to the end of the field
    return range(first, last + 1, step)


def _join(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def apscheduler_fields(expression: str) -> list[dict[str, str]]:
    """Keyword sets for ``apscheduler.triggers.cron.CronTrigger``; more than one means OR them.

    Every field is written out explicitly, weekdays as names, so nothing depends on how
    APScheduler numbers or combines fields.
    """
    spec = parse(expression)
    base = {"minute": _join(spec.minutes), "hour": _join(spec.hours), "month": _join(spec.months)}
    weekdays = ",".join(APS_WEEKDAYS[d] for d in sorted(spec.weekdays))
    if spec.day_restricted and spec.weekday_restricted:  # crontab(5): either day field may match
        return [{**base, "day": _join(spec.days)}, {**base, "day_of_week": weekdays}]
    # a field starting with `*` (even `*/2`) makes both apply together, which APScheduler does
    return [{**base, "day": _join(spec.days), "day_of_week": weekdays}]
