"""RPA, the reporting agent: Markdown (and JSON) reports of workflow results, and simple aggregates.

* ``report-generation`` (title, sections: name -> any JSON): ``{title, markdown, json}``. Sections keep
  the order given, each under a ``##`` heading. Rendering is deterministic and depends only on the data:

  - a string is a paragraph, a number is formatted (thousands separators, at most two decimals, four
    significant digits below 1), ``true``/``false`` are yes/no, null and empty collections are *none*;
  - a list of scalars is a bullet list; a list of objects whose values are scalars (or short lists and
    objects of scalars, shown inline) is a table with the union of their keys as columns; a list of
    deeper objects is one sub-heading per object;
  - an object is a bullet list of its scalar fields (and short lists of scalars, inline), then a
    sub-heading for each nested field, in their given order.

  Headings go no deeper than ``######``; below that, nested values are shown inline. ``json`` is the
  report (title and sections) serialised with two-space indentation, keys in their given order.
* ``data-aggregation`` (values: numbers, or objects plus ``field``): count, sum, mean, median, min, max.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, items

NONE = "_none_"


def format_number(value: float) -> str:
    """1450 -> '1,450'; 58899.917 -> '58,899.92'; 0.04 -> '0.04'; 2.5 -> '2.5'."""
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 1:
        return f"{value:.4g}"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _label(key: Any) -> str:
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else "(unnamed)"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _scalar(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


def _inline(value: Any) -> str:
    """Any value on one line (table cells, bullets of mixed lists, headings too deep to open)."""
    if _is_scalar(value):
        return _scalar(value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_inline(v)}" for k, v in value.items()) if value else NONE
    if isinstance(value, list | tuple):
        return ", ".join(_inline(v) for v in value) if value else NONE
    return str(value)


def _cell(value: Any) -> str:
    return _inline(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _flat(value: Any) -> bool:
    """A value a table cell can show: a scalar, or a list/object of scalars."""
    if _is_scalar(value):
        return True
    if isinstance(value, Mapping):
        return all(_is_scalar(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_is_scalar(v) for v in value)
    return False


def _table(rows: list[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    lines = ["| " + " | ".join(_cell(_label(c)) for c in columns) + " |",
             "|" + "|".join(" ---: " if all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool)
                                            for r in rows if c in r) else " --- " for c in columns) + "|"]
    lines.extend("| " + " | ".join(_cell(row[c]) if c in row else "" for c in columns) + " |" for row in rows)
    return lines


def _short(value: Any, depth: int) -> bool:
    """A field shown as a bullet of its object: a scalar, an empty collection, a short list of scalars, or
    anything once headings run out."""
    if _is_scalar(value) or depth > 6 or (isinstance(value, list | tuple | Mapping) and not value):
        return True
    return isinstance(value, list | tuple) and all(_is_scalar(v) for v in value) and len(_inline(value)) <= 60


def _title_of(item: Mapping[str, Any], index: int) -> str:
    for key in ("title", "name", "day", "id", "exercise"):
        if _is_scalar(item.get(key)) and item.get(key) not in (None, ""):
            return f"{index}. {_scalar(item[key])}"
    return f"{index}."


def _render(value: Any, depth: int) -> list[str]:
    """Markdown blocks (separated by blank lines) for a value whose heading, if any, is at ``depth - 1``."""
    if _is_scalar(value):
        return [_scalar(value)]
    if isinstance(value, Mapping):
        if not value:
            return [NONE]
        bullets = [f"- **{_label(key)}**: {_inline(sub)}" for key, sub in value.items() if _short(sub, depth)]
        blocks = ["\n".join(bullets)] if bullets else []
        for key, sub in value.items():
            if not _short(sub, depth):
                blocks.append(f"{'#' * depth} {_label(key)}")
                blocks.extend(_render(sub, depth + 1))
        return blocks
    if isinstance(value, list | tuple):
        if not value:
            return [NONE]
        if all(_is_scalar(v) for v in value) or depth > 6:
            return ["\n".join(f"- {_inline(v)}" for v in value)]
        if all(isinstance(v, Mapping) and v for v in value):
            if all(_flat(v) for row in value for v in row.values()):
                return ["\n".join(_table(list(value)))]
            blocks = []
            for index, item in enumerate(value, start=1):
                blocks.append(f"{'#' * depth} {_title_of(item, index)}")
                blocks.extend(_render(item, depth + 1))
            return blocks
        return ["\n".join(f"- {_inline(v)}" for v in value)]
    return [str(value)]


def render_markdown(title: str, sections: Mapping[str, Any]) -> str:
    blocks = [f"# {title}"]
    for name, value in sections.items():
        blocks.append(f"## {_label(name)}")
        blocks.extend(_render(value, 3))
    return "\n\n".join(blocks) + "\n"


def report_generation(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    title = params.get("title")
    if not isinstance(title, str | int | float) or isinstance(title, bool) or not str(title).strip():
        raise AgentInputError(f"'title' must be a non-empty string, got {title!r}")
    title = " ".join(str(title).split())
    sections = params.get("sections", {})
    if not isinstance(sections, Mapping):
        raise AgentInputError(f"'sections' must be an object of section name -> content, got {type(sections).__name__}")
    try:
        document = json.dumps({"title": title, "sections": sections}, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AgentInputError(f"'sections' must hold JSON data only: {exc}") from None
    return {"title": title, "markdown": render_markdown(title, sections), "json": document,
            "sections": list(sections)}


def data_aggregation(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    values = items(params, "values")
    field = params.get("field")
    if field is not None and not isinstance(field, str):
        raise AgentInputError(f"'field' must be a string, got {field!r}")
    numbers: list[float] = []
    for i, value in enumerate(values):
        where = f"values[{i}]"
        if isinstance(value, Mapping):
            if field is None:
                raise AgentInputError(f"'field' is required when 'values' holds objects ({where} is one)")
            if field not in value:
                raise AgentInputError(f"'{where}' has no field '{field}'")
            value, where = value[field], f"{where}.{field}"
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AgentInputError(f"'{where}' must be a finite number, got {value!r}")
        numbers.append(value)
    if not numbers:
        return {"field": field, "count": 0, "sum": 0, "mean": None, "median": None, "min": None, "max": None}
    import statistics  # here: loading the agent (its health probe) does not need it

    total = math.fsum(numbers)
    return {
        "field": field,
        "count": len(numbers),
        "sum": total,
        "mean": total / len(numbers),
        "median": statistics.median(numbers),
        "min": min(numbers),
        "max": max(numbers),
    }


METHODS = {
    "report-generation": report_generation,
    "data-aggregation": data_aggregation,
}
