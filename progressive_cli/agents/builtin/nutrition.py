"""Nutrition Planning Agent (NPA): energy targets, food analysis, meal plans and guideline checks.

All methods are pure and deterministic and run offline on ``data/foods.csv`` (USDA FoodData Central,
SR Legacy, values per 100 g). ``nutrition-analysis`` may ask ``context["usda"]`` (a callable
``name -> per-100 g nutrients or None``) about foods the table lacks; nothing here reaches a network.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, Method, choice, items, number

NUTRIENTS = ("kcal", "protein_g", "fat_g", "carbohydrate_g", "fiber_g", "sugar_g", "saturated_fat_g", "sodium_mg")
TABLE_SOURCE = "USDA FoodData Central, SR Legacy (April 2018 release); values per 100 g edible portion"


# --- numbers ---------------------------------------------------------------------------------------------
def _dec(value: float | int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def round_half_up(value: float | Decimal, places: int = 0) -> float | int:
    """Round half away from zero (2.5 -> 3, -2.5 -> -3), on the decimal value as written, not the binary one."""
    quantum = Decimal(1).scaleb(-places)
    rounded = _dec(value).quantize(quantum, rounding=ROUND_HALF_UP)
    return int(rounded) if places <= 0 else float(rounded)


def _r1(value: float) -> float:
    return float(round_half_up(value, 1))


# --- the food table ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Food:
    name: str
    group: str
    per100: Mapping[str, float]
    tags: frozenset[str]

    def per_gram(self, nutrient: str) -> float:
        return self.per100[nutrient] / 100.0

    @property
    def role(self) -> str:
        """What the planner uses the food for: protein, starch, vegetable, fruit, fat, mixed or drink."""
        p, f, c = (self.per100[k] for k in ("protein_g", "fat_g", "carbohydrate_g"))
        energy = 4 * p + 9 * f + 4 * c
        if "drink" in self.tags or energy <= 0:
            return "drink"
        if "oil" in self.tags or 9 * f / energy >= 0.7:
            return "fat"
        if 4 * p / energy >= 0.3:
            return "protein"
        if "vegetable" in self.tags and self.per100["kcal"] < 70:
            return "vegetable"
        if "fruit" in self.tags and 4 * c / energy >= 0.6 and self.per100["kcal"] < 100:
            return "fruit"
        if 4 * c / energy >= 0.55:
            return "starch"
        return "mixed"


def _normal(name: str) -> str:
    return " ".join(name.lower().split())


@lru_cache(maxsize=1)
def foods() -> dict[str, Food]:
    """The shipped table, keyed by normalised name, in file order."""
    from importlib import resources  # here: loading the agent (its health probe) does not need it

    text = (resources.files("progressive_cli.agents.builtin") / "data" / "foods.csv").read_text(encoding="utf-8")
    table: dict[str, Food] = {}
    for row in csv.DictReader(io.StringIO(text)):
        food = Food(
            name=row["name"],
            group=row["fdc_group"],
            per100={k: float(row[k]) for k in NUTRIENTS},
            tags=frozenset(t.strip() for t in row["tags"].split(";") if t.strip()),
        )
        table[_normal(food.name)] = food
    return table


def _closest(name: str, limit: int = 5) -> list[str]:
    table = foods()
    wanted = _normal(name)
    contains = [f.name for key, f in table.items() if wanted and wanted in key]
    close = [table[k].name for k in difflib.get_close_matches(wanted, list(table), n=limit, cutoff=0.4)]
    out: list[str] = []
    for candidate in contains + close:
        if candidate not in out:
            out.append(candidate)
    return out[:limit]


def _nutrients_for(food: Food, grams: float) -> dict[str, float]:
    return {k: food.per_gram(k) * grams for k in NUTRIENTS}


def _usda_food(lookup: Callable[[str], Any], name: str, where: str) -> Food | None:
    found = lookup(name)
    if found is None:
        return None
    if not isinstance(found, Mapping):
        raise AgentInputError(f"'{where}': the USDA lookup for {name!r} returned {type(found).__name__}, not nutrients")
    per100: dict[str, float] = {}
    for key in NUTRIENTS:
        value = found.get(key, 0.0)
        per100[key] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
    tags = found.get("tags", ())
    return Food(name=str(found.get("name", name)), group=str(found.get("fdc_group", "USDA")), per100=per100,
                tags=frozenset(str(t) for t in tags) if isinstance(tags, list | tuple) else frozenset())


# --- calorie-targets ---------------------------------------------------------------------------------------
ACTIVITY = {"sedentary": Decimal("1.2"), "light": Decimal("1.375"), "moderate": Decimal("1.55"),
            "active": Decimal("1.725"), "very_active": Decimal("1.9")}
GOAL = {"lose": -500, "maintain": 0, "gain": 300}
PROTEIN_G_PER_KG = Decimal("1.8")
FAT_ENERGY_SHARE = Decimal("0.25")
MIFFLIN = ("Mifflin MD, St Jeor ST, et al. A new predictive equation for resting energy expenditure in healthy "
           "individuals. Am J Clin Nutr 1990;51:241-7")


def calorie_targets(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    age = _dec(number(params, "age", minimum=14, maximum=100))
    sex = choice(params, "sex", ("female", "male"))
    weight = _dec(number(params, "weight_kg", minimum=30, maximum=300))
    height = _dec(number(params, "height_cm", minimum=120, maximum=230))
    activity = choice(params, "activity", tuple(ACTIVITY), default="moderate")
    goal = choice(params, "goal", tuple(GOAL), default="maintain")

    bmr = 10 * weight + Decimal("6.25") * height - 5 * age + (5 if sex == "male" else -161)
    tdee = bmr * ACTIVITY[activity]
    calories = round_half_up(tdee + GOAL[goal])
    energy = Decimal(calories)
    protein_exact = PROTEIN_G_PER_KG * weight
    fat = round_half_up(energy * FAT_ENERGY_SHARE / 9)
    carbohydrate_exact = (energy - protein_exact * 4 - energy * FAT_ENERGY_SHARE) / 4
    result: dict[str, Any] = {
        "bmr_kcal": round_half_up(bmr),
        "tdee_kcal": round_half_up(tdee),
        "calories": calories,
        "macros": {
            "protein_g": round_half_up(protein_exact),
            "fat_g": fat,
            "carbohydrate_g": max(0, round_half_up(carbohydrate_exact)),
        },
        "method": "Mifflin-St Jeor BMR x activity factor + goal adjustment",
        "assumptions": {
            "activity_factor": float(ACTIVITY[activity]),
            "goal_adjustment_kcal": GOAL[goal],
            "protein_g_per_kg": float(PROTEIN_G_PER_KG),
            "fat_pct_energy": 25,
            "carbohydrate": "the remaining energy",
        },
        "source": MIFFLIN,
    }
    if carbohydrate_exact < 0:
        result["note"] = "protein and fat targets exceed the energy target; carbohydrate set to 0"
    return result


# --- nutrition-analysis ------------------------------------------------------------------------------------
def _entry_grams(entry: Mapping[str, Any], where: str) -> float:
    grams = entry.get("grams")
    if isinstance(grams, bool) or not isinstance(grams, int | float):
        raise AgentInputError(f"'{where}.grams' must be a number, got {grams!r}")
    if not 0 <= grams <= 10000:
        raise AgentInputError(f"'{where}.grams' must be between 0 and 10000, got {grams:g}")
    return float(grams)


def nutrition_analysis(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    entries = items(params, "foods")
    if not entries:
        raise AgentInputError("'foods' must list at least one {name, grams}")
    lookup = context.get("usda")
    table = foods()
    totals = dict.fromkeys(NUTRIENTS, 0.0)
    breakdown: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"foods[{i}]"
        if not isinstance(entry, Mapping):
            raise AgentInputError(f"'{where}' must be an object with 'name' and 'grams', got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AgentInputError(f"'{where}.name' must be a food name, got {name!r}")
        grams = _entry_grams(entry, where)
        food = table.get(_normal(name))
        source = "table"
        if food is None and callable(lookup):
            food, source = _usda_food(lookup, name, where), "usda"
        if food is None:
            near = _closest(name)
            hint = f"; closest: {'; '.join(near)}" if near else ""
            raise AgentInputError(f"'{where}.name': unknown food {name!r}{hint}")
        amounts = _nutrients_for(food, grams)
        for key, value in amounts.items():
            totals[key] += value
        breakdown.append({"name": food.name, "grams": grams, "source": source,
                          "nutrients": {k: _r1(v) for k, v in amounts.items()}})
    return {"totals": {k: _r1(v) for k, v in totals.items()}, "items": breakdown,
            "energy_pct": _energy_split(totals), "source": TABLE_SOURCE}


def _energy_split(totals: Mapping[str, float]) -> dict[str, float]:
    parts = {"protein": 4 * totals["protein_g"], "fat": 9 * totals["fat_g"],
             "carbohydrate": 4 * totals["carbohydrate_g"]}
    whole = sum(parts.values())
    return {k: _r1(100 * v / whole) if whole else 0.0 for k, v in parts.items()}


# --- meal-planning -----------------------------------------------------------------------------------------
KCAL_TOLERANCE_PCT = 5
PROTEIN_TOLERANCE_PCT = 15
MEAL_SHARES = {
    3: (("breakfast", 0.30), ("lunch", 0.40), ("dinner", 0.30)),
    4: (("breakfast", 0.25), ("lunch", 0.35), ("dinner", 0.30), ("snack", 0.10)),
    5: (("breakfast", 0.25), ("morning snack", 0.10), ("lunch", 0.30), ("dinner", 0.25), ("afternoon snack", 0.10)),
}
# Preferred foods per slot, tried first (after exclusions); any other food with the slot's meal tag and role follows.
PREFERRED = {
    ("breakfast", "protein"): ["yogurt, Greek, plain, nonfat", "egg, whole, hard-boiled",
                               "cottage cheese, lowfat, 2% milkfat", "tofu, firm, calcium sulfate"],
    ("breakfast", "starch"): ["oats, rolled, dry", "bread, whole-wheat, commercially prepared", "bread, rye",
                              "english muffin, plain, enriched"],
    ("breakfast", "fruit"): ["blueberries, raw", "banana, raw", "strawberries, raw", "apple, raw, with skin"],
    ("main", "protein"): ["chicken breast, roasted, skin removed", "salmon, Atlantic, wild, cooked, dry heat",
                          "turkey breast, roasted, skin removed", "cod, Atlantic, cooked, dry heat",
                          "pork tenderloin, roasted, lean only", "beef, top sirloin steak, lean only, broiled",
                          "tofu, firm, calcium sulfate", "tempeh", "lentils, boiled"],
    ("side", "starch"): ["rice, brown, long-grain, cooked", "quinoa, cooked", "potato, baked, flesh and skin",
                         "spaghetti, whole-wheat, cooked", "sweet potato, baked in skin",
                         "rice, white, long-grain, cooked"],
    ("side", "vegetable"): ["broccoli, boiled", "green beans, boiled", "spinach, boiled", "carrots, boiled",
                            "mixed vegetables, frozen, boiled", "brussels sprouts, boiled", "cauliflower, boiled"],
    ("side", "fat"): ["olive oil", "canola oil"],
    ("snack", "protein"): ["yogurt, Greek, plain, nonfat", "edamame, frozen, prepared", "almonds",
                           "peanuts, dry-roasted, without salt", "hummus, commercial", "pumpkin seeds, dried"],
    ("snack", "fruit"): ["apple, raw, with skin", "orange, raw", "pear, raw", "banana, raw"],
}


@dataclass(frozen=True)
class Slot:
    """One place in a meal: which kind of food from which meal tag, how much, and whether the solver sizes it."""

    tag: str
    roles: tuple[str, ...]
    grams: float = 0.0  # fixed portion when not adjustable
    adjustable: bool = False
    min_g: float = 0.0
    max_g: float = 500.0
    max_kcal: float = 900.0


MAIN_MEAL = (Slot("main", ("protein",), adjustable=True, min_g=60, max_g=300, max_kcal=600),
             Slot("side", ("starch",), adjustable=True, min_g=40, max_g=700, max_kcal=1000),
             Slot("side", ("fat",), adjustable=True, min_g=0, max_g=150, max_kcal=400),
             Slot("side", ("vegetable",), grams=150))
TEMPLATES = {
    "breakfast": (Slot("breakfast", ("protein",), adjustable=True, min_g=50, max_g=400, max_kcal=500),
                  Slot("breakfast", ("starch",), adjustable=True, min_g=20, max_g=250, max_kcal=800),
                  Slot("breakfast", ("fruit",), grams=100)),
    "lunch": MAIN_MEAL,
    "dinner": MAIN_MEAL,
    "snack": (Slot("snack", ("protein", "fat", "mixed"), adjustable=True, min_g=10, max_g=350, max_kcal=600),
              Slot("snack", ("fruit",), grams=100)),
}


Portion = tuple[Food, float, Slot]


def _template(meal: str) -> tuple[Slot, ...]:
    return TEMPLATES["snack" if meal.endswith("snack") else meal]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _excluded(exclusions: list[str]) -> tuple[set[str], list[str]]:
    """Names of the foods the exclusions rule out, and the exclusions that matched nothing."""
    out: set[str] = set()
    unmatched: list[str] = []
    for term in exclusions:
        wanted = _normal(term)
        single = _singular(wanted)
        pattern = re.compile(rf"\b{re.escape(single)}(s|es)?\b")
        hit = False
        for key, food in foods().items():
            tags = {_singular(t) for t in food.tags}
            if single in tags or wanted == key or pattern.search(key):
                out.add(food.name)
                hit = True
        if not hit:
            unmatched.append(term)
    return out, unmatched


def _candidates(slot: Slot, excluded: set[str], used: set[str]) -> list[Food]:
    table = foods()
    ok = [f for f in table.values() if slot.tag in f.tags and f.role in slot.roles and f.name not in excluded]
    preferred: list[Food] = []
    for role in slot.roles:
        for name in PREFERRED.get((slot.tag, role), []):
            food = table.get(_normal(name))
            if food is not None and food in ok and food not in preferred:
                preferred.append(food)

    def score(food: Food) -> tuple[float, str]:
        per_kcal = max(food.per100["kcal"], 1.0)
        key = "protein_g" if food.role == "protein" else "fiber_g"
        return (-food.per100[key] / per_kcal, food.name)

    rest = sorted((f for f in ok if f not in preferred), key=score)
    ordered = preferred + rest
    fresh = [f for f in ordered if f.name not in used]
    return fresh or ordered


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(rhs)
    a = [[*row, rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _bounds(food: Food, slot: Slot) -> tuple[float, float]:
    return slot.min_g, min(slot.max_g, slot.max_kcal * 100 / max(food.per100["kcal"], 1.0))


def _fit(adjustable: list[tuple[Food, Slot]], fixed: dict[str, float],
         targets: list[tuple[str, float]]) -> dict[str, float]:
    """Grams for the adjustable foods so the meal meets the targets in priority order (kcal first), within bounds."""
    grams: dict[str, float] = {}
    free = list(adjustable)
    bounds = {f.name: _bounds(f, s) for f, s in adjustable}
    while free:
        keys = [k for k, _ in targets[:len(free)]]
        variables, extras = free[:len(keys)], free[len(keys):]
        for food, _slot in extras:  # more foods than targets: the extras keep their smallest portion
            grams[food.name] = bounds[food.name][0]
        free = variables

        def residual(key: str, value: float) -> float:
            already = fixed.get(key, 0.0) + sum(
                table_food.per_gram(key) * grams[table_food.name]
                for table_food, _ in adjustable if table_food.name in grams)
            return value - already

        rhs = [residual(k, v) for k, v in targets[:len(keys)]]
        matrix = [[food.per_gram(k) for food, _ in variables] for k in keys]
        solution = _solve(matrix, rhs)
        if solution is None:
            if len(keys) == 1:
                for food, _ in variables:
                    grams[food.name] = bounds[food.name][0]
                return grams
            targets = targets[:len(keys) - 1]
            continue
        out = [i for i, g in enumerate(solution) if not bounds[variables[i][0].name][0] <= g
               <= bounds[variables[i][0].name][1]]
        if not out:
            for (food, _), g in zip(variables, solution, strict=True):
                grams[food.name] = g
            return grams
        for i in out:
            low, high = bounds[variables[i][0].name]
            grams[variables[i][0].name] = min(max(solution[i], low), high)
        free = [v for i, v in enumerate(variables) if i not in out]
    return grams


def _step(food: Food) -> float:
    return 1.0 if food.role == "fat" else 5.0


def _round_to(grams: float, step: float) -> float:
    return float(round_half_up(grams / step) * step)


def _macros_param(params: Mapping[str, Any]) -> dict[str, float]:
    raw = params.get("macros")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AgentInputError(f"'macros' must be an object with protein_g, fat_g, carbohydrate_g; got {raw!r}")
    out: dict[str, float] = {}
    for key in ("protein_g", "fat_g", "carbohydrate_g"):
        if key in raw and raw[key] is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise AgentInputError(f"'macros.{key}' must be a number of grams, got {value!r}")
            out[key] = float(value)
    return out


def meal_planning(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    calories = number(params, "calories", minimum=800, maximum=6000)
    macros = _macros_param(params)
    exclusions = items(params, "exclusions", default=[])
    for i, term in enumerate(exclusions):
        if not isinstance(term, str) or not term.strip():
            raise AgentInputError(f"'exclusions[{i}]' must be a food name or tag, got {term!r}")
    meals_count = int(number(params, "meals", minimum=3, maximum=5, default=4))
    if meals_count not in MEAL_SHARES:
        raise AgentInputError(f"'meals' must be 3, 4 or 5, got {params.get('meals')!r}")
    day = number(params, "day", minimum=0, maximum=10000, default=0)
    if day != int(day):
        raise AgentInputError(f"'day' must be a whole number, got {day:g}")

    excluded, unmatched = _excluded([str(t) for t in exclusions])
    # Internal aims where no macro is given: 20 % of energy from protein, 30 % from fat.
    aims = {"kcal": calories,
            "protein_g": macros.get("protein_g", calories * 0.20 / 4),
            "fat_g": macros.get("fat_g", calories * 0.30 / 9)}
    shares = MEAL_SHARES[meals_count]
    mains = [m for m, _ in shares if m in ("lunch", "dinner")]
    order = [m for m, _ in shares if m not in mains] + mains  # the main meals absorb what the others left over
    share_of = dict(shares)
    used: set[str] = set()
    planned: dict[str, list[Portion]] = {}
    eaten = dict.fromkeys(NUTRIENTS, 0.0)

    for meal in order:
        rotation = int(day) + (1 if meal in ("dinner", "afternoon snack") else 0)
        chosen: list[tuple[Food, Slot]] = []
        for slot in _template(meal):
            options = _candidates(slot, excluded, used)
            if options:
                chosen.append((options[rotation % len(options)], slot))
        if not any(slot.adjustable for _, slot in chosen):
            raise AgentInputError(f"'exclusions' leave no foods to build {meal} from")
        if meal in mains:
            still = [m for m in mains if m not in planned]
            fraction = share_of[meal] / sum(share_of[m] for m in still)
            meal_aims = {k: max(0.0, (aims[k] - eaten[k]) * fraction) for k in aims}
        else:
            meal_aims = {k: v * share_of[meal] for k, v in aims.items()}
        fixed = dict.fromkeys(NUTRIENTS, 0.0)
        for food, slot in chosen:
            if not slot.adjustable:
                for k in NUTRIENTS:
                    fixed[k] += food.per_gram(k) * slot.grams
        adjustable = [(f, s) for f, s in chosen if s.adjustable]
        targets = [("kcal", meal_aims["kcal"]), ("protein_g", meal_aims["protein_g"])]
        if any(f.role == "fat" for f, _ in adjustable):
            targets.append(("fat_g", meal_aims["fat_g"]))
        fitted = _fit(adjustable, fixed, targets)
        portions = [(food, _round_to(fitted[food.name] if slot.adjustable else slot.grams, _step(food)), slot)
                    for food, slot in chosen]
        planned[meal] = [p for p in portions if p[1] > 0]
        for food, grams, _slot in planned[meal]:
            used.add(food.name)
            for k in NUTRIENTS:
                eaten[k] += food.per_gram(k) * grams

    _correct_energy(planned, order[::-1], calories)
    return _plan_output(planned, [m for m, _ in shares], calories, macros, exclusions, unmatched)


def _correct_energy(planned: dict[str, list[Portion]], order: list[str], calories: float) -> None:
    """Where clamping and rounding left the day off by more than 1 %, resize adjustable portions within their
    bounds, starches first, meals in ``order`` (the last planned first)."""
    for roles in (("starch",), ("fat", "protein", "mixed")):
        for meal in order:
            gap = calories - sum(f.per_gram("kcal") * g for portions in planned.values() for f, g, _ in portions)
            if abs(gap) <= calories * 0.01:
                return
            portions = planned[meal]
            for i, (food, grams, slot) in enumerate(portions):
                if not slot.adjustable or food.role not in roles or food.per100["kcal"] <= 0:
                    continue
                low, high = _bounds(food, slot)
                wanted = _round_to(grams + gap / food.per_gram("kcal"), _step(food))
                portions[i] = (food, min(max(wanted, low, _step(food)), high), slot)
                break


def _plan_output(planned: dict[str, list[Portion]], meal_order: list[str], calories: float,
                 macros: Mapping[str, float], exclusions: list[Any], unmatched: list[str]) -> dict[str, Any]:
    totals = dict.fromkeys(NUTRIENTS, 0.0)
    meals_out: list[dict[str, Any]] = []
    for meal in meal_order:
        meal_totals = dict.fromkeys(NUTRIENTS, 0.0)
        for food, grams, _slot in planned[meal]:
            for k in NUTRIENTS:
                meal_totals[k] += food.per_gram(k) * grams
        for k in NUTRIENTS:
            totals[k] += meal_totals[k]
        meals_out.append({"meal": meal, "items": [{"name": f.name, "grams": g} for f, g, _ in planned[meal]],
                          "kcal": _r1(meal_totals["kcal"]), "protein_g": _r1(meal_totals["protein_g"])})
    kcal_dev = 100 * (totals["kcal"] - calories) / calories
    accuracy: dict[str, float] = {"kcal_pct": _r1(kcal_dev)}
    ok = abs(kcal_dev) <= KCAL_TOLERANCE_PCT
    target: dict[str, float] = {"calories": calories, **macros}
    for key in ("protein_g", "fat_g", "carbohydrate_g"):
        if macros.get(key):
            accuracy[f"{key.removesuffix('_g')}_pct"] = _r1(100 * (totals[key] - macros[key]) / macros[key])
    protein_ok = None
    if macros.get("protein_g"):
        protein_ok = abs(accuracy["protein_pct"]) <= PROTEIN_TOLERANCE_PCT
        ok = ok and protein_ok
    out: dict[str, Any] = {
        "meals": meals_out,
        "totals": {k: _r1(v) for k, v in totals.items()},
        "target": target,
        "deviation_pct": accuracy,
        "tolerance_pct": KCAL_TOLERANCE_PCT,
        "protein_tolerance_pct": PROTEIN_TOLERANCE_PCT,
        "within_tolerance": ok,
        "protein_within_tolerance": protein_ok,
        "exclusions": list(exclusions),
        "source": TABLE_SOURCE,
    }
    if unmatched:
        out["unmatched_exclusions"] = unmatched
    return out


# --- dietary-recommendations -------------------------------------------------------------------------------
DGA = "Dietary Guidelines for Americans, 2020-2025 (USDA & HHS)"


def dietary_recommendations(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    totals = params.get("totals")
    if not isinstance(totals, Mapping):
        raise AgentInputError(f"'totals' must be an object of nutrient totals, got {totals!r}")
    sex = choice(params, "sex", ("female", "male"))
    values: dict[str, float] = {}
    for key in ("kcal", "sodium_mg", "saturated_fat_g", "sugar_g", "fiber_g"):
        value = totals.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise AgentInputError(f"'totals.{key}' must be a non-negative number, got {value!r}")
        values[key] = float(value)
    kcal = values["kcal"]
    if kcal <= 0:
        raise AgentInputError("'totals.kcal' must be more than 0")
    sat_pct = 100 * 9 * values["saturated_fat_g"] / kcal
    sugar_pct = 100 * 4 * values["sugar_g"] / kcal
    fiber_per_1000 = 1000 * values["fiber_g"] / kcal
    checks: list[dict[str, Any]] = [
        {"name": "sodium", "value": _r1(values["sodium_mg"]), "unit": "mg/day", "limit": "< 2300",
         "ok": values["sodium_mg"] < 2300, "source": DGA},
        {"name": "saturated fat", "value": _r1(sat_pct), "unit": "% of energy", "limit": "< 10",
         "ok": sat_pct < 10, "source": DGA},
        {"name": "sugar", "value": _r1(sugar_pct), "unit": "% of energy", "limit": "< 10",
         "ok": sugar_pct < 10, "source": DGA,
         "note": "the limit is for added sugars; SR Legacy gives total sugars, so this check is conservative"},
        {"name": "fiber", "value": _r1(fiber_per_1000), "unit": "g per 1000 kcal", "limit": ">= 14",
         "ok": fiber_per_1000 >= 14, "source": DGA},
    ]
    messages = {
        "sodium": f"Sodium {values['sodium_mg']:.0f} mg is at or above the 2300 mg/day limit.",
        "saturated fat": f"Saturated fat gives {sat_pct:.1f} % of energy; keep it under 10 %.",
        "sugar": f"Sugars give {sugar_pct:.1f} % of energy; keep added sugars under 10 % "
                 "(figure is total sugars, so it overstates added sugar).",
        "fiber": f"Fiber {fiber_per_1000:.1f} g per 1000 kcal is below 14 g per 1000 kcal.",
    }
    return {"checks": checks, "warnings": [messages[str(c["name"])] for c in checks if not c["ok"]],
            "sex": sex, "passed": all(c["ok"] for c in checks)}


METHODS: dict[str, Method] = {
    "calorie-targets": calorie_targets,
    "nutrition-analysis": nutrition_analysis,
    "meal-planning": meal_planning,
    "dietary-recommendations": dietary_recommendations,
}
