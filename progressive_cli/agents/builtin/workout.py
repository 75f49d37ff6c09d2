"""WPA, the workout planning agent: weekly plans, exercise look-ups and one-rep-max progress.

Offline over ``data/exercises.csv`` (name, primary and secondary muscles, equipment, level, movement
pattern, compound/isolation, and whether the exercise is counted in reps, seconds or metres).

* ``workout-design`` (goal, level, days 1-6, equipment): a split chosen by the number of days
  (full body for 1-3, upper/lower for 4, push/pull/legs for 5-6); each session fills movement-pattern
  slots with exercises the equipment and level allow (bodyweight is always available), alternating the
  first two candidates between repeated sessions of the same focus (A/B). Loading by goal follows the
  NSCA *Essentials of Strength Training and Conditioning* (4th ed., 2016) and the ACSM position stand
  "Progression models in resistance training for healthy adults" (2009): strength 3-5 x 3-6 with
  2-5 min rest, hypertrophy 3-4 x 8-12 with 60-90 s, muscular endurance 2-3 x 15-20 with 30-60 s;
  ``general`` is the ACSM novice recommendation, 2-3 x 8-12 with 60-120 s.
* ``exercise-selection`` (muscle, equipment?, level?, pattern?): the exercises for a muscle group.
* ``progress-tracking`` (exercise, weight_kg, reps 1-12, target_reps?): the Epley (1985) estimate
  1RM = w x (1 + reps / 30), rounded to 0.5 kg (a single rep is its own 1RM), and the next session's
  progressive-overload step: when the target reps were reached, add load (+5 kg for a lower-body
  compound lift, +2.5 kg for an upper-body compound lift, +1 kg for an isolation exercise, within the
  ACSM's 2-10 % guidance); otherwise keep the load and add one rep.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, choice, items, number

GOALS = ("strength", "hypertrophy", "endurance", "general")
LEVELS = ("beginner", "intermediate", "advanced")
EQUIPMENT = ("barbell", "dumbbell", "bodyweight", "machine", "cable", "kettlebell", "band")
PATTERNS = ("push", "pull", "squat", "hinge", "lunge", "carry", "core", "conditioning")
MUSCLES = ("chest", "back", "shoulders", "biceps", "triceps", "forearms", "quadriceps", "hamstrings", "glutes",
           "calves", "core", "full body")
MUSCLE_ALIASES = {"quads": "quadriceps", "hamstring": "hamstrings", "glute": "glutes", "abs": "core",
                  "lats": "back", "delts": "shoulders", "arms": "biceps", "pecs": "chest", "calf": "calves"}
LOWER_BODY = frozenset({"quadriceps", "hamstrings", "glutes", "calves"})

SOURCE = ("NSCA, Essentials of Strength Training and Conditioning (4th ed., 2016); ACSM position stand, "
          "Progression models in resistance training for healthy adults, Med Sci Sports Exerc 41(3), 2009")
EPLEY_SOURCE = "Epley B. (1985) Poundage chart, Boyd Epley Workout"

# goal -> (sets, reps, rest_s) for the main compound lifts and for the accessory work, plus the ranges stated.
PRESCRIPTIONS: dict[str, dict[str, Any]] = {
    "strength": {"main": (5, 5, 180), "accessory": (3, 6, 120), "sets": "3-5", "reps": "3-6", "rest_s": "120-300"},
    "hypertrophy": {"main": (4, 8, 90), "accessory": (3, 12, 60), "sets": "3-4", "reps": "8-12", "rest_s": "60-90"},
    "endurance": {"main": (3, 15, 60), "accessory": (2, 20, 30), "sets": "2-3", "reps": "15-20", "rest_s": "30-60"},
    "general": {"main": (3, 10, 90), "accessory": (2, 12, 60), "sets": "2-3", "reps": "8-12", "rest_s": "60-120"},
}

Slot = tuple[str, frozenset[str]]  # movement pattern, accepted primary muscles


def _slot(pattern: str, *muscles: str) -> Slot:
    return pattern, frozenset(muscles)


SESSIONS: dict[str, list[Slot]] = {
    "full body": [_slot("squat", "quadriceps"), _slot("push", "chest"), _slot("pull", "back"),
                  _slot("hinge", "hamstrings", "glutes"), _slot("push", "shoulders"), _slot("core", "core")],
    "upper": [_slot("push", "chest"), _slot("pull", "back"), _slot("push", "shoulders"), _slot("pull", "back"),
              _slot("push", "triceps"), _slot("pull", "biceps")],
    "lower": [_slot("squat", "quadriceps"), _slot("hinge", "hamstrings", "glutes"), _slot("lunge", "quadriceps"),
              _slot("squat", "calves"), _slot("core", "core")],
    "push": [_slot("push", "chest"), _slot("push", "shoulders"), _slot("push", "chest"), _slot("push", "shoulders"),
             _slot("push", "triceps")],
    "pull": [_slot("pull", "back"), _slot("pull", "back"), _slot("pull", "shoulders"), _slot("pull", "biceps"),
             _slot("core", "core")],
    "legs": [_slot("squat", "quadriceps"), _slot("hinge", "hamstrings", "glutes"), _slot("lunge", "quadriceps"),
             _slot("squat", "calves"), _slot("core", "core")],
}
CONDITIONING: Slot = _slot("conditioning", *MUSCLES)

# days per week -> (split, focus per session, weekdays); rest days fall between sessions where they can
SPLITS: dict[int, tuple[str, list[str], list[str]]] = {
    1: ("full body", ["full body"], ["Monday"]),
    2: ("full body", ["full body"] * 2, ["Monday", "Thursday"]),
    3: ("full body", ["full body"] * 3, ["Monday", "Wednesday", "Friday"]),
    4: ("upper/lower", ["upper", "lower", "upper", "lower"], ["Monday", "Tuesday", "Thursday", "Friday"]),
    5: ("push/pull/legs", ["push", "pull", "legs", "push", "pull"],
        ["Monday", "Tuesday", "Wednesday", "Friday", "Saturday"]),
    6: ("push/pull/legs", ["push", "pull", "legs"] * 2,
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]),
}


@functools.cache
def exercises() -> tuple[dict[str, Any], ...]:
    """The shipped exercise table, one dict per row (secondary muscles as a list)."""
    from importlib import resources  # here: loading the agent (its health probe) does not need it

    text = resources.files("progressive_cli.agents.builtin").joinpath("data", "exercises.csv").read_text("utf-8")
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append({**row, "secondary": [m for m in row["secondary"].split(";") if m]})
    return tuple(rows)


def _lookup(name: str) -> dict[str, Any] | None:
    key = " ".join(name.lower().split())
    return next((row for row in exercises() if row["name"] == key), None)


# --- parameters ----------------------------------------------------------------------------------------------------
def _integer(params: Mapping[str, Any], name: str, *, minimum: int, maximum: int, default: int | None = None) -> int:
    value = number(params, name, minimum=minimum, maximum=maximum, default=default)
    if not value.is_integer():
        raise AgentInputError(f"'{name}' must be a whole number, got {value:g}")
    return int(value)


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise AgentInputError(f"'{name}' must be a non-empty string, got {value!r}")
    return value.strip()


def _equipment(params: Mapping[str, Any], default: list[str]) -> list[str]:
    raw = params.get("equipment", default)
    value = [raw] if isinstance(raw, str) else items(params, "equipment", default=default)
    chosen = []
    for entry in value:
        key = entry.strip().lower() if isinstance(entry, str) else entry
        if key not in EQUIPMENT:
            raise AgentInputError(f"'equipment' entries must be among {', '.join(EQUIPMENT)}; got {entry!r}")
        if key not in chosen:
            chosen.append(key)
    return chosen


def _levels_up_to(level: str) -> set[str]:
    return set(LEVELS[: LEVELS.index(level) + 1])


# --- methods -------------------------------------------------------------------------------------------------------
def workout_design(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    goal = choice(params, "goal", GOALS, default="general")
    level = choice(params, "level", LEVELS, default="beginner")
    days = _integer(params, "days", minimum=1, maximum=6, default=3)
    equipment = _equipment(params, ["bodyweight"])
    available = set(equipment) | {"bodyweight"}
    levels = _levels_up_to(level)
    pool = [row for row in exercises()
            if row["equipment"] in available and row["level"] in levels and row["measure"] == "reps"]
    prescription = PRESCRIPTIONS[goal]

    split, focuses, weekdays = SPLITS[days]
    seen: dict[str, int] = {}
    sessions = []
    for weekday, focus in zip(weekdays, focuses, strict=True):
        rotation = seen.get(focus, 0)
        seen[focus] = rotation + 1
        slots = SESSIONS[focus] + ([CONDITIONING] if goal == "endurance" else [])
        chosen: list[dict[str, Any]] = []
        entries = []
        for position, (pattern, muscles) in enumerate(slots):
            candidates = [row for row in pool if row["pattern"] == pattern and row["primary"] in muscles
                          and row not in chosen]
            if not candidates:
                continue
            row = candidates[rotation % min(2, len(candidates))]  # A/B alternation over the two best
            chosen.append(row)
            kind = "main" if position < 2 and row["mechanics"] == "compound" else "accessory"
            sets, reps, rest = prescription[kind]
            entries.append({"name": row["name"], "sets": sets, "reps": reps, "rest_s": rest})
        sessions.append({"day": weekday, "focus": focus, "exercises": entries})
    return {
        "split": split,
        "goal": goal,
        "level": level,
        "days": days,
        "equipment": sorted(available, key=EQUIPMENT.index),
        "prescription": {k: prescription[k] for k in ("sets", "reps", "rest_s")},
        "sessions": sessions,
        "source": SOURCE,
    }


def exercise_selection(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    raw = params.get("muscle")
    muscle = MUSCLE_ALIASES.get(raw.strip().lower(), raw.strip().lower()) if isinstance(raw, str) else raw
    if muscle not in MUSCLES:
        raise AgentInputError(f"'muscle' must be one of {', '.join(MUSCLES)}; got {raw!r}")
    equipment = _equipment(params, list(EQUIPMENT))
    level = choice(params, "level", LEVELS, default="advanced")
    pattern = params.get("pattern")
    if pattern is not None and pattern not in PATTERNS:
        raise AgentInputError(f"'pattern' must be one of {', '.join(PATTERNS)}; got {pattern!r}")
    levels = _levels_up_to(level)
    matches = [dict(row, secondary=list(row["secondary"])) for row in exercises()
               if row["primary"] == muscle and row["equipment"] in equipment and row["level"] in levels
               and (pattern is None or row["pattern"] == pattern)]
    return {"muscle": muscle, "equipment": equipment, "level": level, "count": len(matches), "exercises": matches}


def epley(weight_kg: float, reps: int) -> float:
    """Epley's estimate of the one-rep max, rounded to the nearest 0.5 kg (halves round up)."""
    estimate = weight_kg if reps == 1 else weight_kg * (1 + reps / 30)
    return math.floor(estimate * 2 + 0.5) / 2


def progress_tracking(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    exercise = _text(params, "exercise")
    weight = number(params, "weight_kg", minimum=0, maximum=1000)
    if weight <= 0:
        raise AgentInputError(f"'weight_kg' must be greater than 0, got {weight:g}")
    reps = _integer(params, "reps", minimum=1, maximum=12)
    target = _integer(params, "target_reps", minimum=1, maximum=12, default=5)

    row = _lookup(exercise)
    if row is not None:
        region = "lower" if row["primary"] in LOWER_BODY or row["pattern"] in ("squat", "hinge", "lunge") else "upper"
        mechanics = row["mechanics"]
    else:  # not in the table: guess the region from the name, assume a compound lift
        lowered = exercise.lower()
        region = "lower" if any(w in lowered for w in ("squat", "deadlift", "lunge", "leg", "hip", "calf")) else "upper"
        mechanics = "compound"

    if reps >= target:
        step = 1.0 if mechanics == "isolation" else 5.0 if region == "lower" else 2.5
        suggestion = {"weight_kg": weight + step, "reps": target, "change": f"+{step:g} kg",
                      "rule": f"reached {target} reps: add load ({region}-body {mechanics})"}
    else:
        suggestion = {"weight_kg": weight, "reps": reps + 1, "change": "+1 rep",
                      "rule": f"below {target} reps: keep the load and add a rep"}
    return {
        "exercise": exercise,
        "weight_kg": weight,
        "reps": reps,
        "one_rep_max_kg": epley(weight, reps),
        "formula": "epley",
        "known_exercise": row is not None,
        "region": region,
        "mechanics": mechanics,
        "next": {**suggestion, "target_reps": target},
        "source": f"{EPLEY_SOURCE}; overload steps after ACSM (2009)",
    }


METHODS = {
    "workout-design": workout_design,
    "exercise-selection": exercise_selection,
    "progress-tracking": progress_tracking,
}
