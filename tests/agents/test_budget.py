"""BMA: keyword categories, the 50/30/20 comparison and compound-interest projections, hand-checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from progressive_cli.agents.builtin import AgentInputError, methods
from progressive_cli.agents.builtin import budget as bma

REPO = Path(__file__).resolve().parents[2]
M = methods("bma")


def defaults() -> dict:
    spec = yaml.safe_load((REPO / "workflows" / "monthly-budget-review.yaml").read_text())
    return {key: value.get("default") for key, value in spec["inputs"].items()}


def track(transactions):
    return M["expense-tracking"]({"transactions": transactions}, {})


def optimise(income, by_category):
    return M["budget-optimization"]({"income": income, "by_category": by_category}, {})


def plan(**params):
    return M["financial-planning"](params, {})


# --- expense-tracking ----------------------------------------------------------------------------------------------
def test_default_transactions_are_categorised():
    out = track(defaults()["transactions"])
    assert [(t["description"], t["category"], t["kind"]) for t in out["transactions"]] == [
        ("Rent October", "housing", "need"),
        ("Whole Foods Market", "groceries", "need"),
        ("Shell gas station", "transport", "need"),
        ("Netflix subscription", "entertainment", "want"),
        ("Electric utility bill", "utilities", "need"),
        ("Restaurant Luigi", "dining", "want"),
        ("Gym membership", "fitness", "want"),
        ("Amazon order", "shopping", "want"),
        ("Transfer to savings", "savings", "savings"),
    ]
    # biggest first
    assert out["by_category"] == {"housing": 1450.0, "savings": 400.0, "shopping": 230.75, "groceries": 182.4,
                                  "utilities": 94.1, "dining": 86.0, "transport": 61.2, "fitness": 45.0,
                                  "entertainment": 15.49}
    assert list(out["by_category"]) == ["housing", "savings", "shopping", "groceries", "utilities", "dining",
                                        "transport", "fitness", "entertainment"]
    # needs: 1450 + 182.40 + 61.20 + 94.10 = 1787.70
    # wants: 15.49 + 86 + 45 + 230.75 = 377.24
    # savings: 400;  total 1787.70 + 377.24 + 400 = 2564.94
    assert out["by_kind"] == {"need": 1787.7, "want": 377.24, "savings": 400.0}
    assert out["total"] == 2564.94
    assert out["count"] == 9


@pytest.mark.parametrize(("description", "category"), [
    ("British Gas bill", "utilities"),      # utilities are tried before transport
    ("Uber Eats order", "dining"),           # dining before transport
    ("Uber trip downtown", "transport"),
    ("Monthly mortgage payment", "housing"),
    ("CVS Pharmacy", "health"),
    ("Spotify Premium", "entertainment"),
    ("Car insurance - Geico", "insurance"),
    ("Student loan", "debt"),
    ("Barnes and Noble", "other"),           # "bar" matches whole words only
    ("Something unusual", "other"),
])
def test_keyword_rules(description, category):
    assert bma.categorise(description) == category


def test_explicit_category_refunds_and_exact_cents():
    out = track([
        {"date": "2026-10-01", "description": "misc", "amount": 0.1, "category": "Groceries"},
        {"date": "2026-10-02", "description": "Tesco", "amount": 0.2},
        {"date": "2026-10-03", "description": "Amazon", "amount": 50},
        {"date": "2026-10-04", "description": "Amazon refund", "amount": -20},
    ])
    assert out["by_category"] == {"shopping": 30.0, "groceries": 0.3}  # 0.1 + 0.2 is 0.3 exactly, in cents
    assert out["total"] == 30.3


def test_expense_tracking_is_deterministic():
    txs = defaults()["transactions"]
    assert track(txs) == track(txs)


@pytest.mark.parametrize(("transactions", "name"), [
    ("rent", "transactions"),
    (["rent"], "transactions[0]"),
    ([{"description": "rent", "amount": "1450"}], "transactions[0].amount"),
    ([{"description": "rent"}], "transactions[0].amount"),
    ([{"description": "rent", "amount": True}], "transactions[0].amount"),
    ([{"description": 7, "amount": 1}], "transactions[0].description"),
])
def test_expense_tracking_errors(transactions, name):
    with pytest.raises(AgentInputError, match=re.escape(f"'{name}'")):
        M["expense-tracking"]({"transactions": transactions}, {})


# --- budget-optimization -------------------------------------------------------------------------------------------
def test_default_month_against_50_30_20():
    by_category = track(defaults()["transactions"])["by_category"]
    out = optimise(4200, by_category)
    # targets: 50/30/20 of 4200 = 2100 / 1260 / 840
    assert out["target"] == {"needs": 2100.0, "wants": 1260.0, "savings": 840.0}
    assert out["actual"] == {"needs": 1787.7, "wants": 377.24, "savings": 400.0}
    # 1787.70 / 4200 = 42.564 %, 377.24 / 4200 = 8.982 %, 400 / 4200 = 9.524 %
    assert out["actual_pct"] == {"needs": 42.56, "wants": 8.98, "savings": 9.52}
    # neither needs (1787.70 <= 2100) nor wants (377.24 <= 1260) is over: nothing overspent
    assert out["overspent"] == []
    # savings short by 840 - 400 = 440; unaccounted income 4200 - 2564.94 = 1635.06
    assert out["unallocated"] == 1635.06
    assert any("440.00" in line for line in out["advice"])
    assert any("1635.06" in line for line in out["advice"])
    assert out["income"] == 4200
    assert "Warren" in out["source"] and "2005" in out["source"]


def test_overspent_needs_lists_need_categories_biggest_first():
    # income 3000: targets 1500 / 900 / 600. needs 1400 + 300 = 1700 > 1500; wants 500 + 200 = 700 <= 900
    out = optimise(3000, {"groceries": 300, "housing": 1400, "dining": 500, "shopping": 200, "savings": 300})
    assert out["overspent"] == ["housing", "groceries"]
    assert out["actual"] == {"needs": 1700.0, "wants": 700.0, "savings": 300.0}
    assert out["advice"][0].startswith("Needs take 56.67% of income")  # 1700 / 3000 = 56.67 %
    assert "cut 200.00 a month" in out["advice"][0]                    # 1700 - 1500


def test_overspent_both_kinds_and_unknown_categories_count_as_wants():
    # income 2000: targets 1000 / 600 / 400. needs 1100 + 50 = 1150 > 1000; wants 400 + 350 = 750 > 600
    out = optimise(2000, {"housing": 1100, "groceries": 50, "dining": 400, "pets": 350})
    assert out["overspent"] == ["housing", "dining", "pets", "groceries"]
    assert out["kinds"]["pets"] == "want"
    # spending 1900 of 2000, savings 0: "save 400.00 more"
    assert any("save 400.00 more" in line for line in out["advice"])


def test_saving_more_than_20_percent_is_not_overspending():
    out = optimise(1000, {"housing": 400, "dining": 100, "savings": 500})
    assert out["overspent"] == []
    assert out["advice"] == ["Spending is within the 50/30/20 targets."]


def test_spending_over_income_is_reported():
    out = optimise(1000, {"housing": 900, "dining": 300})
    assert any("exceeds income by 200.00" in line for line in out["advice"])


@pytest.mark.parametrize(("params", "name"), [
    ({"income": 0, "by_category": {}}, "income"),
    ({"income": -5, "by_category": {}}, "income"),
    ({"by_category": {}}, "income"),
    ({"income": 1000, "by_category": [["housing", 100]]}, "by_category"),
    ({"income": 1000, "by_category": {"housing": "100"}}, "by_category.housing"),
])
def test_budget_optimization_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["budget-optimization"](params, {})


# --- financial-planning --------------------------------------------------------------------------------------------
def test_future_value_of_400_a_month_at_4_percent_for_10_years():
    # i = 0.04 / 12 = 0.0033333, n = 120 months
    # ln(1.0033333) = 0.0033333 - 0.0033333^2/2 + 0.0033333^3/3 = 0.00332779
    # (1 + i)^120 = exp(120 x 0.00332779) = exp(0.3993348) = 1.4918247 x exp(-0.0006652) = 1.490833
    # FV = 400 x (1.490833 - 1) / 0.0033333 = 400 x 147.2498 = 58,899.9
    out = plan(monthly_saving=400, annual_rate=0.04, years=10)
    assert out["final_balance"] == pytest.approx(58899.9, abs=0.1)
    assert out["final_balance"] == 58899.92
    assert out["contributed"] == 48000.0      # 400 x 12 x 10
    assert out["interest"] == 10899.92        # 58,899.92 - 48,000
    assert len(out["yearly"]) == 10
    assert out["yearly"][-1] == {"year": 10, "balance": 58899.92}
    # year 1: 1.0033333^12 = 1.0407415; 400 x 0.0407415 / 0.0033333 = 400 x 12.22245 = 4,888.98
    assert out["yearly"][0]["balance"] == pytest.approx(4888.98, abs=0.02)
    balances = [y["balance"] for y in out["yearly"]]
    assert balances == sorted(balances)


def test_future_value_simple_cases():
    # 12 % a year is exactly 1 % a month: 100 x (1.01^12 - 1) / 0.01 = 100 x 12.682503 = 1,268.25
    assert plan(monthly_saving=100, annual_rate=0.12, years=1)["final_balance"] == 1268.25
    # initial only: 1000 x 1.01^12 = 1,126.825 -> 1,126.83
    assert plan(monthly_saving=0, annual_rate=0.12, years=1, initial=1000)["final_balance"] == 1126.83
    # no interest: 1000 + 100 x 12 x 5 = 7,000
    zero = plan(monthly_saving=100, annual_rate=0, years=5, initial=1000)
    assert zero["final_balance"] == 7000.0
    assert zero["contributed"] == 7000.0
    assert zero["interest"] == 0.0
    assert [y["balance"] for y in zero["yearly"]] == [2200.0, 3400.0, 4600.0, 5800.0, 7000.0]


def test_financial_planning_matches_the_workflow():
    inputs = defaults()
    out = plan(monthly_saving=inputs["monthly_saving"], annual_rate=inputs["annual_rate"], years=inputs["years"])
    assert isinstance(out["final_balance"], float)
    assert set(out) >= {"final_balance", "contributed", "interest", "yearly"}


@pytest.mark.parametrize(("params", "name"), [
    ({"monthly_saving": -1, "annual_rate": 0.04, "years": 10}, "monthly_saving"),
    ({"monthly_saving": 100, "annual_rate": 1.5, "years": 10}, "annual_rate"),
    ({"monthly_saving": 100, "annual_rate": -0.01, "years": 10}, "annual_rate"),
    ({"monthly_saving": 100, "annual_rate": 0.04, "years": 0}, "years"),
    ({"monthly_saving": 100, "annual_rate": 0.04, "years": 61}, "years"),
    ({"monthly_saving": 100, "annual_rate": 0.04, "years": 2.5}, "years"),
    ({"monthly_saving": 100, "annual_rate": 0.04, "years": 5, "initial": -10}, "initial"),
])
def test_financial_planning_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["financial-planning"](params, {})
