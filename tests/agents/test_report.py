"""RPA: deterministic Markdown and JSON reports, and aggregates."""

from __future__ import annotations

import json

import pytest

from progressive_cli.agents.builtin import AgentInputError, methods
from progressive_cli.agents.builtin import report as rpa

M = methods("rpa")


def report(title, sections):
    return M["report-generation"]({"title": title, "sections": sections}, {})


@pytest.mark.parametrize(("value", "text"), [
    (1450, "1,450"),
    (1450.0, "1,450"),
    (58899.917, "58,899.92"),
    (116.5, "116.5"),
    (0.04, "0.04"),
    (0.0035, "0.0035"),
    (-2.5, "-2.5"),
    (0, "0"),
    (0.0, "0"),
])
def test_number_format(value, text):
    assert rpa.format_number(value) == text


def test_markdown_layout_exactly():
    out = report("Monthly  budget review", {
        "summary": "All good.",
        "categories": {"housing": 1450.0, "dining": 86},
        "rule_50_30_20": {"overspent": [], "actual": {"needs": 1787.7}, "advice": ["Save 440.00 more a month."]},
        "lifts": [{"exercise": "back squat", "one_rep_max_kg": 116.5, "next": {"weight_kg": 105.0, "reps": 5}},
                  {"exercise": "deadlift", "one_rep_max_kg": 143.0}],
        "flags": {"checked": True, "note": None},
    })
    assert out["title"] == "Monthly budget review"
    assert out["markdown"] == (
        "# Monthly budget review\n\n"
        "## Summary\n\n"
        "All good.\n\n"
        "## Categories\n\n"
        "- **Housing**: 1,450\n"
        "- **Dining**: 86\n\n"
        "## Rule 50 30 20\n\n"
        "- **Overspent**: _none_\n"
        "- **Advice**: Save 440.00 more a month.\n\n"
        "### Actual\n\n"
        "- **Needs**: 1,787.7\n\n"
        "## Lifts\n\n"
        "| Exercise | One rep max kg | Next |\n"
        "| --- | ---: | --- |\n"
        "| back squat | 116.5 | weight_kg: 105; reps: 5 |\n"
        "| deadlift | 143 |  |\n\n"
        "## Flags\n\n"
        "- **Checked**: yes\n"
        "- **Note**: _none_\n"
    )


def test_nested_records_get_headings_and_tables():
    plan = {"split": "full body", "sessions": [
        {"day": "Monday", "focus": "full body",
         "exercises": [{"name": "back squat", "sets": 5, "reps": 5, "rest_s": 180}]},
    ]}
    md = report("Training week", {"plan": plan})["markdown"]
    assert "### Sessions\n\n#### 1. Monday\n\n- **Day**: Monday\n- **Focus**: full body\n\n##### Exercises\n\n" in md
    assert "| Name | Sets | Reps | Rest s |\n| --- | ---: | ---: | ---: |\n| back squat | 5 | 5 | 180 |" in md


def test_long_scalar_lists_are_bullets_and_cells_are_escaped():
    md = report("T", {"advice": ["a" * 40, "b" * 40], "rows": [{"text": "x | y\nz"}]})["markdown"]
    assert "## Advice\n\n- " + "a" * 40 + "\n- " + "b" * 40 in md
    assert "| x \\| y z |" in md


def test_headings_stop_at_level_six():
    deep = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
    md = report("T", {"deep": deep})["markdown"]
    assert "###### D" in md
    assert "- **E**: f: 1" in md
    assert "#######" not in md


def test_json_and_determinism():
    sections = {"b": [1, 2.5], "a": {"x": "y"}, "c": "not checked"}
    first, second = report("T", sections), report("T", dict(sections))
    assert first == second
    assert json.loads(first["json"]) == {"title": "T", "sections": sections}
    assert first["sections"] == ["b", "a", "c"]
    assert first["markdown"].index("## B") < first["markdown"].index("## A")  # given order kept


def test_workflow_shapes():
    # daily-nutrition-plan passes a string when the check failed; the workflows read .markdown
    out = report("Nutrition plan (maintain, 2400 kcal)", {"targets": {"calories": 2400}, "meals": [],
                                                           "guidelines": "not checked"})
    assert set(out) >= {"title", "markdown", "json"}
    assert "## Guidelines\n\nnot checked\n" in out["markdown"]
    assert "## Meals\n\n_none_" in out["markdown"]


@pytest.mark.parametrize(("params", "name"), [
    ({"sections": {}}, "title"),
    ({"title": "  ", "sections": {}}, "title"),
    ({"title": "T", "sections": ["a"]}, "sections"),
    ({"title": "T", "sections": {"a": {1, 2}}}, "sections"),
    ({"title": "T", "sections": {"a": float("nan")}}, "sections"),
])
def test_report_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["report-generation"](params, {})


# --- data-aggregation ----------------------------------------------------------------------------------------------
def test_aggregate_numbers():
    # 3 + 1 + 4 + 1 + 5 = 14; 14 / 5 = 2.8; sorted 1 1 3 4 5 -> median 3
    out = M["data-aggregation"]({"values": [3, 1, 4, 1, 5]}, {})
    assert out == {"field": None, "count": 5, "sum": 14, "mean": 2.8, "median": 3, "min": 1, "max": 5}


def test_aggregate_field_of_objects():
    # 116.5 + 84 + 143 = 343.5; / 3 = 114.5; median 116.5
    values = [{"one_rep_max_kg": 116.5}, {"one_rep_max_kg": 84.0}, {"one_rep_max_kg": 143.0}]
    out = M["data-aggregation"]({"values": values, "field": "one_rep_max_kg"}, {})
    assert (out["count"], out["sum"], out["mean"], out["median"], out["min"], out["max"]) == \
        (3, 343.5, 114.5, 116.5, 84.0, 143.0)


def test_aggregate_empty():
    out = M["data-aggregation"]({"values": []}, {})
    assert out["count"] == 0
    assert out["mean"] is None


@pytest.mark.parametrize(("params", "name"), [
    ({"values": "1,2"}, "values"),
    ({"values": [1, "2"]}, r"values\[1\]"),
    ({"values": [{"a": 1}]}, "field"),
    ({"values": [{"a": 1}, {"b": 2}], "field": "a"}, r"values\[1\]"),
    ({"values": [{"a": "x"}], "field": "a"}, r"values\[0\]\.a"),
    ({"values": [1], "field": 3}, "field"),
])
def test_aggregate_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}"):
        M["data-aggregation"](params, {})
