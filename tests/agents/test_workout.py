"""WPA: weekly plans, exercise selection and Epley one-rep maxes, with hand-checked numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from progressive_cli.agents.builtin import AgentInputError, methods
from progressive_cli.agents.builtin import workout as wpa

REPO = Path(__file__).resolve().parents[2]
M = methods("wpa")


def design(**params):
    return M["workout-design"](params, {})


def track(**params):
    return M["progress-tracking"](params, {})


def workflow_defaults(name: str) -> dict:
    spec = yaml.safe_load((REPO / "workflows" / f"{name}.yaml").read_text())
    return {key: value.get("default") for key, value in spec["inputs"].items()}


# --- the exercise table ------------------------------------------------------------------------------------------
def test_exercise_table_is_complete_and_valid():
    rows = wpa.exercises()
    assert len(rows) >= 60
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    for row in rows:
        assert row["primary"] in wpa.MUSCLES, row
        assert all(m in wpa.MUSCLES for m in row["secondary"]), row
        assert row["equipment"] in wpa.EQUIPMENT, row
        assert row["level"] in wpa.LEVELS, row
        assert row["pattern"] in wpa.PATTERNS, row
        assert row["mechanics"] in ("compound", "isolation"), row
        assert row["measure"] in ("reps", "seconds", "metres"), row
    # every equipment type and pattern is represented
    assert {r["equipment"] for r in rows} == set(wpa.EQUIPMENT)
    assert {r["pattern"] for r in rows} == set(wpa.PATTERNS)


def test_methods_registry():
    assert set(M) == {"workout-design", "exercise-selection", "progress-tracking"}


# --- progress-tracking: Epley -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("weight", "reps", "expected"), [
    (100, 5, 116.5),    # 100 x (1 + 5/30) = 100 x 1.1667 = 116.67 -> nearest 0.5 kg = 116.5
    (70, 6, 84.0),      # 70 x (1 + 6/30) = 70 x 1.2 = 84.0
    (130, 3, 143.0),    # 130 x (1 + 3/30) = 130 x 1.1 = 143.0
    (60, 10, 80.0),     # 60 x (1 + 10/30) = 60 x 1.3333 = 80.0
    (102.5, 4, 116.0),  # 102.5 x 34/30 = 116.17 -> 116.0
    (52.5, 7, 65.0),    # 52.5 x 37/30 = 64.75, exactly between 64.5 and 65.0 -> halves round up: 65.0
    (100, 1, 100.0),    # a single rep is its own 1RM
    (40, 12, 56.0),     # 40 x (1 + 12/30) = 40 x 1.4 = 56.0
])
def test_epley_hand_checked(weight, reps, expected):
    out = track(exercise="back squat", weight_kg=weight, reps=reps)
    assert out["one_rep_max_kg"] == expected
    assert out["formula"] == "epley"


def test_overload_suggestions_for_the_workflow_lifts():
    lifts = workflow_defaults("weekly-training-plan")["lifts"]
    out = {lift["exercise"]: track(**lift) for lift in lifts}
    # back squat 100 x 5, target 5 reached, lower-body compound: +5 kg
    assert out["back squat"]["next"] == {"weight_kg": 105.0, "reps": 5, "change": "+5 kg", "target_reps": 5,
                                         "rule": "reached 5 reps: add load (lower-body compound)"}
    # bench press 70 x 6 >= 5, upper-body compound: +2.5 kg
    assert out["bench press"]["next"]["weight_kg"] == 72.5
    assert out["bench press"]["next"]["change"] == "+2.5 kg"
    # deadlift 130 x 3 < 5: same load, one more rep
    assert out["deadlift"]["next"]["weight_kg"] == 130.0
    assert out["deadlift"]["next"]["reps"] == 4
    assert out["deadlift"]["next"]["change"] == "+1 rep"
    for result in out.values():
        assert set(result) >= {"exercise", "one_rep_max_kg", "formula", "next"}


def test_overload_isolation_and_unknown_exercises():
    curl = track(exercise="Dumbbell  Curl", weight_kg=12, reps=10, target_reps=10)
    assert curl["known_exercise"] is True
    assert curl["mechanics"] == "isolation"
    assert curl["next"]["weight_kg"] == 13.0  # isolation: +1 kg
    zercher = track(exercise="zercher squat", weight_kg=80, reps=5)
    assert zercher["known_exercise"] is False
    assert zercher["region"] == "lower"
    assert zercher["next"]["weight_kg"] == 85.0
    press = track(exercise="landmine press", weight_kg=30, reps=8, target_reps=8)
    assert press["region"] == "upper"
    assert press["next"]["weight_kg"] == 32.5


@pytest.mark.parametrize(("params", "name"), [
    ({"exercise": "bench press", "weight_kg": 60, "reps": 13}, "reps"),
    ({"exercise": "bench press", "weight_kg": 60, "reps": 0}, "reps"),
    ({"exercise": "bench press", "weight_kg": 60, "reps": 2.5}, "reps"),
    ({"exercise": "bench press", "weight_kg": 0, "reps": 5}, "weight_kg"),
    ({"exercise": "bench press", "weight_kg": "60", "reps": 5}, "weight_kg"),
    ({"exercise": "", "weight_kg": 60, "reps": 5}, "exercise"),
    ({"weight_kg": 60, "reps": 5}, "exercise"),
    ({"exercise": "bench press", "weight_kg": 60, "reps": 5, "target_reps": 20}, "target_reps"),
])
def test_progress_tracking_input_errors_name_the_parameter(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["progress-tracking"](params, {})


# --- workout-design ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("days", "split", "focuses"), [
    (1, "full body", ["full body"]),
    (2, "full body", ["full body"] * 2),
    (3, "full body", ["full body"] * 3),
    (4, "upper/lower", ["upper", "lower", "upper", "lower"]),
    (5, "push/pull/legs", ["push", "pull", "legs", "push", "pull"]),
    (6, "push/pull/legs", ["push", "pull", "legs", "push", "pull", "legs"]),
])
def test_split_follows_days(days, split, focuses):
    out = design(goal="hypertrophy", level="intermediate", days=days, equipment=["barbell", "dumbbell"])
    assert out["split"] == split
    assert [s["focus"] for s in out["sessions"]] == focuses
    assert len({s["day"] for s in out["sessions"]}) == days
    for session in out["sessions"]:
        assert len(session["exercises"]) >= 4
        names = [e["name"] for e in session["exercises"]]
        assert len(names) == len(set(names))  # no exercise twice in a session


@pytest.mark.parametrize(("goal", "sets", "reps", "rest"), [
    ("strength", (3, 5), (3, 6), (120, 300)),
    ("hypertrophy", (3, 4), (8, 12), (60, 90)),
    ("endurance", (2, 3), (15, 20), (30, 60)),
    ("general", (2, 3), (8, 12), (60, 120)),
])
def test_loading_by_goal(goal, sets, reps, rest):
    out = design(goal=goal, level="advanced", days=4, equipment=list(wpa.EQUIPMENT))
    for session in out["sessions"]:
        for ex in session["exercises"]:
            assert sets[0] <= ex["sets"] <= sets[1], ex
            assert reps[0] <= ex["reps"] <= reps[1], ex
            assert rest[0] <= ex["rest_s"] <= rest[1], ex
    assert "NSCA" in out["source"]
    assert "ACSM" in out["source"]
    assert "2009" in out["source"]


def test_strength_main_lifts_get_the_heavy_prescription():
    out = design(goal="strength", level="intermediate", days=3, equipment=["barbell", "dumbbell", "bodyweight"])
    monday = out["sessions"][0]
    assert monday["day"] == "Monday"
    assert monday["exercises"][0] == {"name": "back squat", "sets": 5, "reps": 5, "rest_s": 180}
    assert monday["exercises"][1] == {"name": "bench press", "sets": 5, "reps": 5, "rest_s": 180}
    # full body A/B/A: Wednesday's session alternates the main lifts
    assert out["sessions"][1]["exercises"][0]["name"] != "back squat"
    assert out["sessions"][2]["exercises"] == monday["exercises"]


def test_equipment_and_level_filters():
    table = {r["name"]: r for r in wpa.exercises()}
    out = design(goal="general", level="beginner", days=6, equipment=["dumbbell"])
    for session in out["sessions"]:
        for ex in session["exercises"]:
            row = table[ex["name"]]
            assert row["equipment"] in ("dumbbell", "bodyweight")  # bodyweight is always available
            assert row["level"] == "beginner"
            assert row["measure"] == "reps"
    bodyweight_only = design(goal="general", level="beginner", days=2, equipment=[])
    assert all(table[e["name"]]["equipment"] == "bodyweight"
               for s in bodyweight_only["sessions"] for e in s["exercises"])


def test_endurance_sessions_end_with_conditioning():
    table = {r["name"]: r for r in wpa.exercises()}
    out = design(goal="endurance", level="beginner", days=3, equipment=["bodyweight"])
    for session in out["sessions"]:
        assert table[session["exercises"][-1]["name"]]["pattern"] == "conditioning"


def test_design_is_deterministic_and_matches_the_workflow():
    inputs = workflow_defaults("weekly-training-plan")
    params = {k: inputs[k] for k in ("goal", "level", "days", "equipment")}
    first, second = design(**params), design(**params)
    assert first == second
    # the workflow reads .sessions; the report renders the whole plan
    assert set(first) >= {"split", "sessions", "source"}
    for session in first["sessions"]:
        assert set(session) == {"day", "focus", "exercises"}
        for ex in session["exercises"]:
            assert set(ex) == {"name", "sets", "reps", "rest_s"}


@pytest.mark.parametrize(("params", "name"), [
    ({"days": 0}, "days"),
    ({"days": 7}, "days"),
    ({"days": 2.5}, "days"),
    ({"goal": "power"}, "goal"),
    ({"level": "expert"}, "level"),
    ({"equipment": ["trx"]}, "equipment"),
    ({"equipment": {"barbell": True}}, "equipment"),
])
def test_design_input_errors_name_the_parameter(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["workout-design"](params, {})


# --- exercise-selection --------------------------------------------------------------------------------------------
def test_exercise_selection_filters():
    out = M["exercise-selection"]({"muscle": "chest", "equipment": ["dumbbell"], "level": "beginner"}, {})
    names = [e["name"] for e in out["exercises"]]
    assert names == ["dumbbell bench press", "incline dumbbell press", "dumbbell fly"]
    assert out["count"] == 3
    everything = M["exercise-selection"]({"muscle": "quads"}, {})  # alias, all equipment and levels
    assert everything["muscle"] == "quadriceps"
    assert "front squat" in [e["name"] for e in everything["exercises"]]
    hinge = M["exercise-selection"]({"muscle": "hamstrings", "equipment": "barbell", "pattern": "hinge"}, {})
    assert {e["equipment"] for e in hinge["exercises"]} == {"barbell"}
    assert "deadlift" in [e["name"] for e in hinge["exercises"]]


@pytest.mark.parametrize(("params", "name"), [
    ({"muscle": "wings"}, "muscle"),
    ({}, "muscle"),
    ({"muscle": "back", "equipment": ["rope"]}, "equipment"),
    ({"muscle": "back", "level": "pro"}, "level"),
    ({"muscle": "back", "pattern": "throw"}, "pattern"),
])
def test_exercise_selection_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["exercise-selection"](params, {})
