"""EMA: alert triage against the escalation policy, incidents in a store or in memory, escalation targets."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from progressive_cli.agents.builtin import AgentInputError, methods
from progressive_cli.agents.builtin import emergency as ema

M = methods("ema")
NOW = {"now": "2026-10-01T08:00:00+00:00"}


@pytest.fixture(autouse=True)
def _empty_memory_store():
    ema._INCIDENTS.clear()
    yield
    ema._INCIDENTS.clear()


def evaluate(**params):
    return M["alert-evaluation"](params, {})


def incident(context=None, **params):
    return M["incident-management"](params, NOW if context is None else context)


# --- alert-evaluation ----------------------------------------------------------------------------------------------
def test_critical_alerts_are_critical_and_notify_on_call():
    out = evaluate(source="db", severity="critical", summary="primary down")
    assert out["level"] == "critical"
    assert out["escalate"] is True
    assert out["actions"] == ["open_incident", "notify:on-call", "notify:incident-channel"]
    assert out["policy"]["escalate_warning_after_failures"] == 3
    assert out["policy"]["escalate_warning_after_s"] == 900


@pytest.mark.parametrize(("extra", "level"), [
    ({}, "warning"),
    ({"failures": 2}, "warning"),
    ({"failures": 3}, "critical"),         # >= 3 failures escalates
    ({"duration_s": 899}, "warning"),
    ({"duration_s": 900}, "critical"),     # >= 15 min escalates
    ({"failures": 1, "duration_s": 3600}, "critical"),
])
def test_warning_escalates_when_it_persists(extra, level):
    out = evaluate(source="api", severity="warning", summary="slow", **extra)
    assert out["level"] == level
    assert out["escalate"] is (level == "critical")
    if level == "warning":
        assert out["actions"] == ["log", "notify:team-channel"]


def test_info_stays_info_and_is_only_logged():
    out = evaluate(source="cron", severity="info", summary="ran", failures=10)
    assert out["level"] == "info"
    assert out["escalate"] is False
    assert out["actions"] == ["log"]


def test_the_budget_workflow_alert():
    # monthly-budget-review sends severity warning with no failure count: logged as a warning
    out = evaluate(source="monthly-budget-review", severity="warning", summary="Overspent in housing, dining")
    assert out["level"] in ("info", "warning", "critical")
    assert out["level"] == "warning"


def test_policy_in_the_output_is_a_copy():
    out = evaluate(source="x", severity="info")
    out["policy"]["targets"]["critical"].append("everyone")
    assert ema.POLICY["targets"]["critical"] == ["on-call", "incident-channel"]


@pytest.mark.parametrize(("params", "name"), [
    ({"severity": "warning"}, "source"),
    ({"source": " ", "severity": "warning"}, "source"),
    ({"source": "x", "severity": "fatal"}, "severity"),
    ({"source": "x"}, "severity"),
    ({"source": "x", "severity": "warning", "failures": -1}, "failures"),
    ({"source": "x", "severity": "warning", "duration_s": "long"}, "duration_s"),
    ({"source": "x", "severity": "warning", "summary": 5}, "summary"),
])
def test_alert_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["alert-evaluation"](params, {})


# --- incident-management -------------------------------------------------------------------------------------------
def test_open_is_deterministic_and_idempotent():
    first = incident(action="open", source="db", summary="primary down")
    expected = "inc-" + hashlib.sha256(b"db\nprimary down").hexdigest()[:10]
    assert first["id"] == expected
    assert re.fullmatch(r"inc-[0-9a-f]{10}", first["id"])
    assert first["status"] == "open"
    assert first["opened_at"] == NOW["now"]
    assert first["new"] is True
    again = incident({"now": "2026-10-01T09:00:00+00:00"}, action="open", source="db", summary="primary down")
    assert again["id"] == first["id"]
    assert again["new"] is False
    assert again["opened_at"] == NOW["now"]  # the incident already open
    other = incident(action="open", source="db", summary="replica lag")
    assert other["id"] != first["id"]


def test_resolve_list_and_reopen():
    opened = incident(action="open", source="api", summary="5xx spike")
    incident(action="open", source="db", summary="disk full")
    resolved = incident({"now": "2026-10-01T10:00:00+00:00"}, action="resolve", id=opened["id"])
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] == "2026-10-01T10:00:00+00:00"
    listing = incident(action="list")
    assert listing["count"] == 2
    assert incident(action="list", status="open")["count"] == 1
    assert [i["summary"] for i in incident(action="list", status="resolved")["incidents"]] == ["5xx spike"]
    # resolving by the alert it came from works too, and twice is harmless
    assert incident(action="resolve", source="db", summary="disk full")["status"] == "resolved"
    assert incident(action="resolve", source="db", summary="disk full")["status"] == "resolved"
    reopened = incident(action="open", source="api", summary="5xx spike")
    assert reopened["status"] == "open"
    assert reopened["new"] is True
    assert reopened["reopened"] == 1


def test_incidents_live_in_the_context_store_when_given():
    class Store(MutableMapping[str, Any]):
        """A store-backed mapping: records must be written back with __setitem__."""

        def __init__(self) -> None:
            self.data: dict[str, Any] = {}
            self.writes = 0

        def __getitem__(self, key: str) -> Any:
            return dict(self.data[key])  # a copy, as a database would return

        def __setitem__(self, key: str, value: Any) -> None:
            self.writes += 1
            self.data[key] = dict(value)

        def __delitem__(self, key: str) -> None:
            del self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    store = Store()
    context = {**NOW, "incidents": store}
    opened = incident(context, action="open", source="db", summary="down")
    incident(context, action="resolve", id=opened["id"])
    assert store.data[opened["id"]]["status"] == "resolved"
    assert store.writes == 2
    assert ema._INCIDENTS == {}  # the module store was not touched
    assert incident(context, action="list")["count"] == 1


def test_concurrent_opens_make_one_incident():
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: incident(action="open", source="db", summary="down"), range(16)))
    assert len({r["id"] for r in results}) == 1
    assert sum(r["new"] for r in results) == 1


def test_the_incident_workflow_reads_the_id():
    out = M["incident-management"]({"action": "open", "source": "health-check", "summary": ""}, {})
    assert set(out) >= {"id", "status", "opened_at"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", out["opened_at"])


@pytest.mark.parametrize(("params", "name"), [
    ({"action": "close"}, "action"),
    ({}, "action"),
    ({"action": "open", "summary": "x"}, "source"),
    ({"action": "resolve"}, "id"),
    ({"action": "resolve", "id": "inc-0000000000"}, "id"),
    ({"action": "resolve", "id": 7}, "id"),
    ({"action": "list", "status": "closed"}, "status"),
])
def test_incident_errors(params, name):
    with pytest.raises(AgentInputError, match=f"'{name}'"):
        M["incident-management"](params, NOW)


# --- escalation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("level", "targets"), [
    ("critical", ["on-call", "incident-channel"]),
    ("warning", ["team-channel"]),
    ("info", []),
])
def test_escalation_targets(level, targets):
    out = M["escalation"]({"level": level}, {})
    assert out["level"] == level
    assert out["targets"] == targets
    assert out["open_incident"] is (level == "critical")


def test_escalation_error():
    with pytest.raises(AgentInputError, match="'level'"):
        M["escalation"]({"level": "urgent"}, {})
