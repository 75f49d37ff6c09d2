"""The Nutrition Planning Agent: hand-checked targets, table sanity, plans within tolerance, guideline checks."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest

from progressive_cli.agents.builtin import AgentInputError, methods
from progressive_cli.agents.builtin.nutrition import METHODS, foods, round_half_up

NPA = METHODS


def call(method: str, **params):
    return NPA[method](params, {})


def csv_rows() -> list[dict[str, str]]:
    text = (resources.files("progressive_cli.agents.builtin") / "data" / "foods.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_registered_as_npa():
    assert set(methods("npa")) == {"calorie-targets", "nutrition-analysis", "meal-planning", "dietary-recommendations"}


# --- calorie-targets ---------------------------------------------------------------------------------------
def test_round_half_up_is_not_bankers():
    assert round_half_up(2.5) == 3 and round_half_up(3070.5) == 3071 and round_half_up(-2.5) == -3
    assert round_half_up(2187.825, 1) == 2187.8 and round_half_up(0.25, 1) == 0.3


def test_female_maintain_matches_the_calorie_targets_workflow():
    # BMR = 10*68 + 6.25*170 - 5*34 - 161 = 680 + 1062.5 - 170 - 161 = 1411.5 -> 1412
    # TDEE = 1411.5 * 1.55 = 2187.825 -> 2188; maintain -> 2188 kcal
    # protein 1.8*68 = 122.4 -> 122; fat 2188*0.25/9 = 60.78 -> 61
    # carbohydrate (2188 - 122.4*4 - 547) / 4 = (2188 - 489.6 - 547) / 4 = 287.85 -> 288
    out = call("calorie-targets", age=34, sex="female", weight_kg=68, height_cm=170)
    assert (out["bmr_kcal"], out["tdee_kcal"], out["calories"]) == (1412, 2188, 2188)
    assert out["macros"] == {"protein_g": 122, "fat_g": 61, "carbohydrate_g": 288}
    assert "Mifflin" in out["source"]


def test_male_active_gain_rounds_halves_up():
    # BMR = 800 + 6.25*180 (1125) - 150 + 5 = 1780
    # TDEE = 1780 * 1.725 = 3070.5 -> 3071 (Python's round would give 3070)
    # gain: 3070.5 + 300 = 3370.5 -> 3371
    # protein 1.8*80 = 144; fat 3371*0.25/9 = 93.64 -> 94
    # carbohydrate (3371 - 576 - 842.75) / 4 = 1952.25 / 4 = 488.06 -> 488
    out = call("calorie-targets", age=30, sex="male", weight_kg=80, height_cm=180, activity="active", goal="gain")
    assert (out["bmr_kcal"], out["tdee_kcal"], out["calories"]) == (1780, 3071, 3371)
    assert out["macros"] == {"protein_g": 144, "fat_g": 94, "carbohydrate_g": 488}


def test_female_sedentary_lose():
    # BMR = 800 + 6.25*165 (1031.25) - 5*45 (225) - 161 = 1445.25 -> 1445
    # TDEE = 1445.25 * 1.2 = 1734.3 -> 1734; lose: 1734.3 - 500 = 1234.3 -> 1234
    # protein 1.8*80 = 144; fat 1234*0.25/9 = 34.28 -> 34
    # carbohydrate (1234 - 576 - 308.5) / 4 = 349.5 / 4 = 87.375 -> 87
    out = call("calorie-targets", age=45, sex="female", weight_kg=80, height_cm=165, activity="sedentary", goal="lose")
    assert (out["bmr_kcal"], out["tdee_kcal"], out["calories"]) == (1445, 1734, 1234)
    assert out["macros"] == {"protein_g": 144, "fat_g": 34, "carbohydrate_g": 87}


def test_male_very_active_with_fractional_inputs():
    # BMR = 10*72.5 + 6.25*176.4 - 5*22 + 5 = 725 + 1102.5 - 110 + 5 = 1722.5 -> 1723
    # TDEE = 1722.5 * 1.9 = 3272.75 -> 3273; protein 1.8*72.5 = 130.5 -> 131
    # fat 3273*0.25/9 = 90.92 -> 91; carbohydrate (3273 - 522 - 818.25)/4 = 483.19 -> 483
    out = call("calorie-targets", age=22, sex="male", weight_kg=72.5, height_cm=176.4, activity="very_active")
    assert (out["bmr_kcal"], out["tdee_kcal"], out["calories"]) == (1723, 3273, 3273)
    assert out["macros"] == {"protein_g": 131, "fat_g": 91, "carbohydrate_g": 483}


@pytest.mark.parametrize(("params", "named"), [
    ({"sex": "female", "weight_kg": 68, "height_cm": 170}, "age"),
    ({"age": 34, "sex": "other", "weight_kg": 68, "height_cm": 170}, "sex"),
    ({"age": 34, "sex": "female", "weight_kg": "heavy", "height_cm": 170}, "weight_kg"),
    ({"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 50}, "height_cm"),
    ({"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 170, "activity": "couch"}, "activity"),
    ({"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 170, "goal": "bulk"}, "goal"),
])
def test_calorie_targets_input_errors_name_the_parameter(params, named):
    with pytest.raises(AgentInputError, match=f"'{named}'"):
        NPA["calorie-targets"](params, {})


# --- the food table ----------------------------------------------------------------------------------------
def test_table_has_enough_unique_foods_with_tags():
    rows = csv_rows()
    assert len(rows) >= 150
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names)
    assert len(foods()) == len(rows)
    meal_tags = {"breakfast", "main", "side", "snack"}
    for row in rows:
        tags = set(row["tags"].split(";"))
        assert tags & meal_tags, row["name"]


def test_every_row_is_atwater_consistent():
    bad = []
    for row in csv_rows():
        kcal = float(row["kcal"])
        atwater = 4 * float(row["protein_g"]) + 9 * float(row["fat_g"]) + 4 * float(row["carbohydrate_g"])
        if abs(kcal - atwater) > max(25, 0.15 * kcal):
            bad.append((row["name"], kcal, round(atwater)))
        values = [float(row[k]) for k in ("fiber_g", "sugar_g", "saturated_fat_g", "sodium_mg")]
        assert min(values) >= 0, row["name"]
        assert float(row["saturated_fat_g"]) <= float(row["fat_g"]) + 0.05, row["name"]
    assert bad == []


# --- nutrition-analysis ------------------------------------------------------------------------------------
def test_analysis_totals_from_the_csv_rows():
    # per 100 g (CSV): rice 130 kcal, 2.7 P, 0.3 F, 28.2 C, 0.4 fib, 0.1 sug, 0.1 sat, 1 Na
    #                  chicken 165, 31.0, 3.6, 0.0, 0.0, 0.0, 1.0, 74;  broccoli 35, 2.4, 0.4, 7.2, 3.3, 1.4, 0.1, 41
    # 200 g rice + 150 g chicken + 100 g broccoli:
    #   kcal 260 + 247.5 + 35 = 542.5;  protein 5.4 + 46.5 + 2.4 = 54.3;  fat 0.6 + 5.4 + 0.4 = 6.4
    #   carbohydrate 56.4 + 0 + 7.2 = 63.6;  fiber 0.8 + 0 + 3.3 = 4.1;  sugar 0.2 + 0 + 1.4 = 1.6
    #   saturated 0.2 + 1.5 + 0.1 = 1.8;  sodium 2 + 111 + 41 = 154
    out = call("nutrition-analysis", foods=[
        {"name": "rice, white, long-grain, cooked", "grams": 200},
        {"name": "Chicken breast, roasted, skin removed", "grams": 150},
        {"name": "broccoli,  boiled", "grams": 100},
    ])
    assert out["totals"] == pytest.approx({"kcal": 542.5, "protein_g": 54.3, "fat_g": 6.4, "carbohydrate_g": 63.6,
                                           "fiber_g": 4.1, "sugar_g": 1.6, "saturated_fat_g": 1.8,
                                           "sodium_mg": 154.0}, abs=0.051)
    assert [i["name"] for i in out["items"]] == ["rice, white, long-grain, cooked",
                                                 "chicken breast, roasted, skin removed", "broccoli, boiled"]
    assert out["items"][1]["nutrients"]["protein_g"] == pytest.approx(46.5)
    assert "SR Legacy" in out["source"]


def test_unknown_food_lists_closest_names():
    with pytest.raises(AgentInputError, match=r"'foods\[1\]\.name'.*closest: .*chicken breast, roasted"):
        call("nutrition-analysis", foods=[{"name": "banana, raw", "grams": 100},
                                          {"name": "chicken breast roasted", "grams": 100}])


def test_usda_callable_fills_gaps_only():
    asked = []

    def usda(name):
        asked.append(name)
        return {"kcal": 200, "protein_g": 10, "fat_g": 10, "carbohydrate_g": 17} if name == "mystery bar" else None

    out = NPA["nutrition-analysis"]({"foods": [{"name": "banana, raw", "grams": 100},
                                                {"name": "mystery bar", "grams": 50}]}, {"usda": usda})
    assert asked == ["mystery bar"]
    assert out["items"][1]["source"] == "usda" and out["totals"]["kcal"] == pytest.approx(89 + 100)
    with pytest.raises(AgentInputError, match="unknown food 'nothing'"):
        NPA["nutrition-analysis"]({"foods": [{"name": "nothing", "grams": 1}]}, {"usda": usda})


@pytest.mark.parametrize(("params", "named"), [
    ({}, "foods"),
    ({"foods": []}, "foods"),
    ({"foods": ["banana"]}, r"foods\[0\]"),
    ({"foods": [{"name": "banana, raw"}]}, r"foods\[0\]\.grams"),
    ({"foods": [{"name": "banana, raw", "grams": -5}]}, r"foods\[0\]\.grams"),
    ({"foods": [{"grams": 5}]}, r"foods\[0\]\.name"),
])
def test_analysis_input_errors(params, named):
    with pytest.raises(AgentInputError, match=f"'{named}'"):
        NPA["nutrition-analysis"](params, {})


# --- meal-planning -----------------------------------------------------------------------------------------
def targets_for(calories: int, weight_kg: float) -> dict[str, int]:
    protein = 1.8 * weight_kg
    return {"protein_g": round(protein), "fat_g": round(calories * 0.25 / 9),
            "carbohydrate_g": round((calories - protein * 4 - calories * 0.25) / 4)}


@pytest.mark.parametrize(("calories", "weight_kg"), [(1600, 60), (2200, 75), (3000, 90)])
def test_plan_hits_calories_and_protein(calories, weight_kg):
    macros = targets_for(calories, weight_kg)
    out = call("meal-planning", calories=calories, macros=macros)
    assert out["tolerance_pct"] == 5 and out["within_tolerance"] is True
    assert abs(out["totals"]["kcal"] - calories) <= 0.05 * calories
    assert abs(out["totals"]["protein_g"] - macros["protein_g"]) <= 0.15 * macros["protein_g"]
    assert [m["meal"] for m in out["meals"]] == ["breakfast", "lunch", "dinner", "snack"]
    # the meal totals add up to the day's totals, and every item's grams are positive
    assert sum(m["kcal"] for m in out["meals"]) == pytest.approx(out["totals"]["kcal"], abs=0.5)
    assert all(i["grams"] > 0 for m in out["meals"] for i in m["items"])
    analysed = call("nutrition-analysis", foods=[i for m in out["meals"] for i in m["items"]])
    assert analysed["totals"]["kcal"] == pytest.approx(out["totals"]["kcal"], abs=0.2)


def test_plan_without_macros_checks_energy_only():
    out = call("meal-planning", calories=2000)
    assert out["within_tolerance"] is True and out["protein_within_tolerance"] is None
    assert out["target"] == {"calories": 2000}


@pytest.mark.parametrize("meals", [3, 5])
def test_other_meal_counts(meals):
    out = call("meal-planning", calories=2400, macros=targets_for(2400, 80), meals=meals)
    assert len(out["meals"]) == meals and out["within_tolerance"] is True


def test_exclusions_are_respected():
    table = foods()
    out = call("meal-planning", calories=2200, macros=targets_for(2200, 75), exclusions=["dairy", "gluten", "peanuts"])
    assert out["within_tolerance"] is True
    for meal in out["meals"]:
        for item in meal["items"]:
            tags = table[item["name"].lower()].tags
            assert not tags & {"dairy", "gluten", "peanut"}, item["name"]


def test_vegan_style_exclusions_and_food_names():
    table = foods()
    out = call("meal-planning", calories=1800, macros=targets_for(1800, 65),
               exclusions=["meat", "fish", "shellfish", "dairy", "egg", "tofu", "olive oil", "unobtainium"])
    names = [i["name"] for m in out["meals"] for i in m["items"]]
    assert out["within_tolerance"] is True
    assert not any(table[n].tags & {"meat", "fish", "shellfish", "dairy", "egg"} for n in names)
    assert not any("tofu" in n or n == "olive oil" for n in names)
    assert out["unmatched_exclusions"] == ["unobtainium"]


def test_plan_is_deterministic_and_day_rotates():
    params = {"calories": 2200, "macros": targets_for(2200, 75), "exclusions": ["nuts"]}
    assert call("meal-planning", **params) == call("meal-planning", **params)
    other = call("meal-planning", **params, day=1)
    assert other["within_tolerance"] is True and other["meals"] != call("meal-planning", **params)["meals"]


@pytest.mark.parametrize(("params", "named"), [
    ({}, "calories"),
    ({"calories": 100}, "calories"),
    ({"calories": 2000, "macros": "lots"}, "macros"),
    ({"calories": 2000, "macros": {"protein_g": "x"}}, "macros.protein_g"),
    ({"calories": 2000, "exclusions": "dairy"}, "exclusions"),
    ({"calories": 2000, "exclusions": [3]}, r"exclusions\[0\]"),
    ({"calories": 2000, "meals": 7}, "meals"),
])
def test_planning_input_errors(params, named):
    with pytest.raises(AgentInputError, match=f"'{named}'"):
        NPA["meal-planning"](params, {})


def test_exclusions_that_leave_nothing_are_an_input_error():
    with pytest.raises(AgentInputError, match="'exclusions'"):
        call("meal-planning", calories=2000, exclusions=["vegan", "vegetarian", "meat", "fish", "shellfish"])


# --- dietary-recommendations -------------------------------------------------------------------------------
def test_recommendations_all_failing():
    # 2000 kcal: sodium 3000 >= 2300; saturated 30 g * 9 = 270 kcal = 13.5 %; sugar 80 g * 4 = 320 kcal = 16 %;
    # fiber 20 g / 2 = 10 g per 1000 kcal < 14
    totals = {"kcal": 2000, "sodium_mg": 3000, "saturated_fat_g": 30, "sugar_g": 80, "fiber_g": 20}
    out = call("dietary-recommendations", totals=totals, sex="male")
    values = {c["name"]: (c["value"], c["ok"]) for c in out["checks"]}
    assert values == {"sodium": (3000.0, False), "saturated fat": (13.5, False), "sugar": (16.0, False),
                      "fiber": (10.0, False)}
    assert len(out["warnings"]) == 4 and out["passed"] is False
    assert all("Dietary Guidelines for Americans, 2020-2025" in c["source"] for c in out["checks"])
    assert "total sugars" in next(c for c in out["checks"] if c["name"] == "sugar")["note"]


def test_recommendations_passing_and_boundaries():
    # 2000 kcal: sat 15 g = 6.75 %; sugar 30 g = 6 %; fiber 28 g = 14.0 g/1000 kcal (meets >= 14)
    totals = {"kcal": 2000, "sodium_mg": 1500, "saturated_fat_g": 15, "sugar_g": 30, "fiber_g": 28, "protein_g": 90}
    out = call("dietary-recommendations", totals=totals, sex="female")
    assert out["warnings"] == [] and out["passed"] is True
    # sodium exactly at 2300 is not "less than 2300"
    out = call("dietary-recommendations", totals={**totals, "sodium_mg": 2300}, sex="female")
    assert [c["name"] for c in out["checks"] if not c["ok"]] == ["sodium"] and len(out["warnings"]) == 1


def test_recommendations_accept_a_plans_totals():
    plan = call("meal-planning", calories=2200, macros=targets_for(2200, 75))
    out = call("dietary-recommendations", totals=plan["totals"], sex="female")
    assert {c["name"] for c in out["checks"]} == {"sodium", "saturated fat", "sugar", "fiber"}
    assert isinstance(out["warnings"], list)


@pytest.mark.parametrize(("params", "named"), [
    ({"sex": "female"}, "totals"),
    ({"totals": {"kcal": 2000}, "sex": "female"}, "totals.sodium_mg"),
    ({"totals": {"kcal": 0, "sodium_mg": 1, "saturated_fat_g": 1, "sugar_g": 1, "fiber_g": 1}, "sex": "female"},
     "totals.kcal"),
    ({"totals": {"kcal": 2000, "sodium_mg": 1, "saturated_fat_g": 1, "sugar_g": 1, "fiber_g": 1}}, "sex"),
])
def test_recommendation_input_errors(params, named):
    with pytest.raises(AgentInputError, match=f"'{named}'"):
        NPA["dietary-recommendations"](params, {})
