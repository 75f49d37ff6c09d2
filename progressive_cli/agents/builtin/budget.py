"""BMA, the budget management agent: categorised spending, the 50/30/20 check and savings projections.

* ``expense-tracking`` (transactions [{date, description, amount}]): each transaction gets the first
  category in :data:`CATEGORY_RULES` with a keyword in its description (whole words, case-insensitive;
  a transaction may name its ``category`` itself), and that category's kind. Amounts are summed in
  cents, so totals are exact; a negative amount (a refund) reduces its category.
* ``budget-optimization`` (income, by_category): the 50/30/20 rule of Warren & Tyagi, *All Your Worth*
  (2005): at most 50 % of after-tax income on needs, 30 % on wants, at least 20 % to savings and
  extra debt repayment. The kind of each category is :data:`KINDS`:

  - needs: housing, utilities, groceries, transport, health, insurance, debt (minimum payments)
  - wants: dining, entertainment (including subscriptions), fitness, shopping, travel, other
  - savings: savings (transfers to savings, investments, retirement accounts)

  Categories it does not know count as wants. ``overspent`` lists the categories of every spending
  kind (needs, wants) that is over its target, biggest first; saving more than 20 % is never overspending.
* ``financial-planning`` (monthly_saving, annual_rate 0-1, years 1-60, initial 0): the future value
  of monthly contributions made at the end of each month, compounded monthly:
  FV = P (1 + r/12)^(12n) + c ((1 + r/12)^(12n) - 1) / (r/12), and P + 12 n c when r = 0.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, items, number

SOURCE_503020 = "Warren, E. & Tyagi, A. (2005). All Your Worth: The Ultimate Lifetime Money Plan. Free Press."

KINDS: dict[str, str] = {
    "housing": "need", "utilities": "need", "groceries": "need", "transport": "need", "health": "need",
    "insurance": "need", "debt": "need",
    "dining": "want", "entertainment": "want", "fitness": "want", "shopping": "want", "travel": "want",
    "other": "want",
    "savings": "savings",
}
TARGETS = {"needs": 0.50, "wants": 0.30, "savings": 0.20}
KIND_GROUP = {"need": "needs", "want": "wants", "savings": "savings"}

# category -> keywords, tried in this order (savings before housing so "mortgage savings" is savings, utilities
# before transport so a "gas bill" is a utility while a "gas station" is transport).
CATEGORY_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("savings", ("savings", "saving", "investment", "invest", "brokerage", "401k", "ira", "pension", "vanguard",
                 "fidelity", "emergency fund")),
    ("housing", ("rent", "mortgage", "landlord", "hoa", "property tax", "council tax", "lease")),
    ("utilities", ("electric", "electricity", "utility", "utilities", "water bill", "gas bill", "internet",
                   "broadband", "phone bill", "mobile", "verizon", "comcast", "t-mobile", "sewer", "trash")),
    ("insurance", ("insurance", "geico", "allstate", "state farm")),
    ("debt", ("loan", "credit card payment", "student loan", "card payment", "minimum payment")),
    ("groceries", ("grocery", "groceries", "supermarket", "whole foods", "trader joe's", "trader joes", "aldi",
                   "lidl", "kroger", "safeway", "tesco", "costco", "walmart grocery", "market")),
    ("dining", ("restaurant", "cafe", "coffee", "starbucks", "mcdonald's", "pizza", "bar", "pub", "takeaway",
                "doordash", "uber eats", "grubhub", "deliveroo", "diner", "bistro", "sushi", "burger")),
    ("entertainment", ("netflix", "spotify", "hulu", "disney", "hbo", "youtube", "subscription", "cinema",
                       "movie", "theatre", "theater", "concert", "tickets", "steam", "playstation", "xbox",
                       "apple music", "prime video")),
    ("fitness", ("gym", "fitness", "yoga", "pilates", "climbing", "crossfit", "peloton")),
    ("health", ("pharmacy", "doctor", "dentist", "dental", "clinic", "hospital", "medical", "optician",
                "prescription", "cvs", "walgreens")),
    ("transport", ("gas station", "fuel", "petrol", "shell", "bp", "exxon", "chevron", "uber", "lyft", "taxi",
                   "bus", "train", "metro", "subway", "transit", "parking", "toll", "car wash", "railway")),
    ("travel", ("airline", "flight", "hotel", "airbnb", "booking.com", "expedia")),
    ("shopping", ("amazon", "ebay", "target", "ikea", "clothing", "shoes", "store", "shop", "mall", "etsy",
                  "best buy", "walmart", "zara", "h&m")),
]
@functools.cache
def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    """One whole-word pattern per category, compiled on first use: loading the agent (its health probe)
    does not pay for compiling them."""
    return [(category, re.compile(r"(?<![\w])(?:" + "|".join(re.escape(k) for k in keywords) + r")(?![\w])"))
            for category, keywords in CATEGORY_RULES]


def categorise(description: str) -> str:
    """The category of a transaction description by the keyword rules, ``other`` when none matches."""
    text = description.lower()
    return next((category for category, pattern in _patterns() if pattern.search(text)), "other")


def kind_of(category: str) -> str:
    return KINDS.get(category, "want")


def _cents(value: float) -> int:
    return round(value * 100)


def _money(cents: int) -> float:
    return cents / 100


# --- methods -------------------------------------------------------------------------------------------------------
def expense_tracking(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    transactions = items(params, "transactions")
    annotated = []
    by_category: dict[str, int] = {}
    by_kind: dict[str, int] = {"need": 0, "want": 0, "savings": 0}
    for i, tx in enumerate(transactions):
        where = f"transactions[{i}]"
        if not isinstance(tx, Mapping):
            raise AgentInputError(f"'{where}' must be an object with date, description and amount; got {tx!r}")
        description = tx.get("description", "")
        if not isinstance(description, str):
            raise AgentInputError(f"'{where}.description' must be a string, got {description!r}")
        amount = tx.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount != amount:
            raise AgentInputError(f"'{where}.amount' must be a number, got {amount!r}")
        given = tx.get("category")
        if given is not None and not isinstance(given, str):
            raise AgentInputError(f"'{where}.category' must be a string, got {given!r}")
        category = given.strip().lower() if given else categorise(description)
        kind = kind_of(category)
        cents = _cents(amount)
        by_category[category] = by_category.get(category, 0) + cents
        by_kind[kind] += cents
        annotated.append({**tx, "category": category, "kind": kind})
    ordered = sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))  # biggest first, ties by name
    return {
        "transactions": annotated,
        "by_category": {category: _money(cents) for category, cents in ordered},
        "by_kind": {kind: _money(cents) for kind, cents in by_kind.items()},
        "total": _money(sum(by_kind.values())),
        "count": len(annotated),
    }


def _percent(part: float, whole: float) -> float:
    return round(100 * part / whole, 2)


def budget_optimization(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    income = number(params, "income", minimum=0)
    if income <= 0:
        raise AgentInputError("'income' must be greater than 0 to compare spending with it")
    raw = params.get("by_category")
    if not isinstance(raw, Mapping):
        raise AgentInputError(f"'by_category' must be an object of category -> amount, got {type(raw).__name__}")
    spent: dict[str, int] = {}
    for category, amount in raw.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount != amount:
            raise AgentInputError(f"'by_category.{category}' must be a number, got {amount!r}")
        spent[str(category)] = _cents(amount)

    income_cents = _cents(income)
    actual = {group: 0 for group in TARGETS}
    for category, cents in spent.items():
        actual[KIND_GROUP[kind_of(category)]] += cents
    target = {group: round(income_cents * share) for group, share in TARGETS.items()}
    over = [group for group in ("needs", "wants") if actual[group] > target[group]]
    overspent = sorted((c for c, cents in spent.items() if KIND_GROUP[kind_of(c)] in over and cents > 0),
                       key=lambda c: (-spent[c], c))
    total = sum(actual.values())
    unallocated = income_cents - total

    advice = []
    for group in over:
        biggest = [c for c in overspent if KIND_GROUP[kind_of(c)] == group]
        advice.append(f"{group.capitalize()} take {_percent(actual[group], income_cents):g}% of income against a "
                      f"{TARGETS[group] * 100:g}% target: cut {_money(actual[group] - target[group]):.2f} a month, "
                      f"starting with {', '.join(biggest[:2])}.")
    if actual["savings"] < target["savings"]:
        advice.append(f"Savings are {_percent(actual['savings'], income_cents):g}% of income against a 20% target: "
                      f"save {_money(target['savings'] - actual['savings']):.2f} more a month.")
    if unallocated < 0:
        advice.append(f"Spending exceeds income by {_money(-unallocated):.2f} this month.")
    elif unallocated > 0 and actual["savings"] < target["savings"]:
        advice.append(f"{_money(unallocated):.2f} of income is not accounted for by these categories; "
                      "moving it to savings would close the gap.")
    if not advice:
        advice.append("Spending is within the 50/30/20 targets.")

    return {
        "income": income,
        "rule": "50/30/20",
        "actual": {group: _money(cents) for group, cents in actual.items()},
        "target": {group: _money(cents) for group, cents in target.items()},
        "actual_pct": {group: _percent(cents, income_cents) for group, cents in actual.items()},
        "unallocated": _money(unallocated),
        "overspent": overspent,
        "advice": advice,
        "kinds": {category: kind_of(category) for category in spent},
        "source": SOURCE_503020,
    }


def future_value(initial: float, monthly: float, annual_rate: float, months: int) -> float:
    if annual_rate == 0:
        return initial + monthly * months
    rate = annual_rate / 12
    growth = (1 + rate) ** months
    return initial * growth + monthly * (growth - 1) / rate


def financial_planning(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    monthly = number(params, "monthly_saving", minimum=0)
    rate = number(params, "annual_rate", minimum=0, maximum=1)
    years_value = number(params, "years", minimum=1, maximum=60)
    if not years_value.is_integer():
        raise AgentInputError(f"'years' must be a whole number, got {years_value:g}")
    years = int(years_value)
    initial = number(params, "initial", minimum=0, default=0)

    final = round(future_value(initial, monthly, rate, 12 * years), 2)
    contributed = round(initial + monthly * 12 * years, 2)
    return {
        "monthly_saving": monthly,
        "annual_rate": rate,
        "years": years,
        "initial": initial,
        "final_balance": final,
        "contributed": contributed,
        "interest": round(final - contributed, 2),
        "yearly": [{"year": y, "balance": round(future_value(initial, monthly, rate, 12 * y), 2)}
                   for y in range(1, years + 1)],
        "formula": "FV = P(1+r/12)^(12n) + c((1+r/12)^(12n) - 1)/(r/12), contributions at month end",
    }


METHODS = {
    "expense-tracking": expense_tracking,
    "budget-optimization": budget_optimization,
    "financial-planning": financial_planning,
}
