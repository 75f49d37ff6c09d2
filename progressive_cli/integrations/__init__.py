"""External APIs and databases: the hub (``hub.Integrations``), the http client (``http``), breakers
persisted in the state store (``breakers``) and one connector per database. Importing this package
imports no driver; each is imported when its integration is first used."""

from typing import Any

FOREVER = 100 * 365 * 86400.0
"""How far ahead a breaker forced open "until reset" puts its half-open time."""


def breaker_name(integration: str) -> str:
    """An integration's row in the store's ``breakers`` table (here, not in ``breakers``: importing
    pybreaker also imports redis when it is installed, a fifth of a second that reading a state need not
    pay)."""
    return f"integration:{integration}"


def breaker_rows(project: Any, stored: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Every breaker an operator can see, by name: each integration's (closed when it has no row yet) and
    each agent instance's that has a row, with its state, counters, ``opened_at``, seconds until it
    half-opens (None when not open, or ``held_open`` when forced open until reset) and last error."""
    p = project
    timeouts = {breaker_name(i.id): float(i.circuit_breaker.reset_timeout)
                for i in p.integrations.integrations if getattr(i, "circuit_breaker", None)}
    for agent in p.agents.agents:
        for b in stored:
            if str(b["name"]).startswith(f"agent:{agent.id}@"):
                timeouts[str(b["name"])] = float(agent.breaker.reset_timeout)
    rows: dict[str, dict[str, Any]] = {str(b["name"]): dict(b) for b in stored}
    for name in timeouts:
        rows.setdefault(name, {"name": name, "state": "closed", "failures": 0, "successes": 0, "opened_at": None,
                               "last_error": None, "updated_at": None})
    out: list[dict[str, Any]] = []
    for name in sorted(rows):
        row = rows[name]
        half_open_in, held = None, False
        if row["state"] == "open" and row["opened_at"] is not None:
            left = row["opened_at"] + timeouts.get(name, 0.0) - now
            held = left > FOREVER / 2
            half_open_in = None if held else round(max(0.0, left), 1)
        out.append({"breaker": name, "state": row["state"], "failures": row["failures"],
                    "successes": row["successes"], "opened_at": row["opened_at"], "half_open_in_s": half_open_in,
                    "held_open": held, "last_error": row["last_error"]})
    return out
