"""Rendering: stdout carries data (table, JSON or YAML), stderr carries diagnostics.

Every string goes through the secret redactor on its way out. Tables are aligned columns
that never wrap a cell (like kubectl): a terminal adds a bold header, pipes get plain text,
and NO_COLOR turns colour off.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import one_line


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return is_tty(stream)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) if value else "-"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def iso_time(t: float | None, timespec: str = "seconds") -> str | None:
    """An epoch time as UTC ISO 8601 (``2026-11-25T03:37:10+00:00``); far-future times are capped at year 9999."""
    if t is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(min(t, 253402300799.0), UTC).isoformat(timespec=timespec)


_UNPRINTABLE = {c: None for c in (*range(0, 9), 11, 12, *range(14, 32), 0x7F)}


def printable(text: str) -> str:
    """Text from a server or a database for the terminal: known secrets masked, and control characters
    (an ANSI escape that would restyle or move the cursor) dropped; newlines and tabs stay."""
    return REDACTOR.redact(text).translate(_UNPRINTABLE)


def to_json_line(data: Any) -> str:
    return json.dumps(REDACTOR.redact_data(data), default=str, ensure_ascii=False, separators=(",", ":"))


def to_json(data: Any) -> str:
    return json.dumps(REDACTOR.redact_data(data), indent=2, sort_keys=False, default=str, ensure_ascii=False)


def to_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(REDACTOR.redact_data(_plain(data)), sort_keys=False, allow_unicode=True)


def _plain(data: Any) -> Any:
    """Turn tuples and other JSON-able values into what yaml.safe_dump accepts."""
    return json.loads(json.dumps(data, default=str))


def emit(
    data: Any,
    fmt: OutputFormat,
    *,
    columns: Sequence[tuple[str, str]] | None = None,
    title: str | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Print ``data`` to stdout in ``fmt``.

    ``data`` is a list of row dicts (rendered with ``columns`` as (key, header) pairs) or one
    dict (rendered as a two-column key/value table).
    """
    out = stream or sys.stdout
    if fmt is OutputFormat.json:
        out.write(to_json(data) + "\n")
        return
    if fmt is OutputFormat.yaml:
        out.write(to_yaml(data))
        return
    if isinstance(data, Mapping):
        rows = [{"key": k, "value": v} for k, v in data.items()]
        table(rows, [("key", "FIELD"), ("value", "VALUE")], title=title, stream=out)
    else:
        table(list(data), columns or _columns(data), title=title, stream=out)


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [(k, k.upper()) for k in keys]


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    title: str | None = None,
    stream: IO[str] | None = None,
) -> None:
    out = stream or sys.stdout
    cells = [[one_line(REDACTOR.redact(_cell(row.get(key)))) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    if use_color(out):
        header = f"\033[1m{header}\033[0m"
    lines = ([title] if title and is_tty(out) else []) + [header, *body]
    out.write("\n".join(lines) + "\n")


def say(message: str, *, style: str | None = None) -> None:
    """A diagnostic line on stderr (never stdout)."""
    text = REDACTOR.redact(message)
    if style and use_color(sys.stderr):
        codes = {"error": "31", "warning": "33", "ok": "32", "dim": "2"}
        text = f"\033[{codes.get(style, '0')}m{text}\033[0m"
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
