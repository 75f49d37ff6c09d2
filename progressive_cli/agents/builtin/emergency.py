"""EMA, the emergency management agent: alert triage against an escalation policy, and incidents.

The default escalation policy (:data:`POLICY`):

* ``critical`` alerts are critical: open an incident and notify the on-call engineer and the incident channel;
* a ``warning`` that has persisted -- ``failures`` >= 3 consecutive failed checks, or ``duration_s`` >= 900
  (15 minutes) -- escalates to critical, with the same actions;
* any other ``warning`` stays a warning: notify the team channel, no incident;
* ``info`` is logged only.

Methods:

* ``alert-evaluation`` (source, severity info|warning|critical, summary?, failures?, duration_s?)
  -> ``{level, escalate, reason, actions, notify, policy}``.
* ``incident-management`` (action open|resolve|list, source, summary, id?): incidents live in
  ``context["incidents"]`` when the caller passes a mutable mapping (so the engine can hand over a
  store-backed one), else in this module's in-memory store. An incident's id is ``inc-`` and the first
  10 hex digits of SHA-256 over source and summary, so opening the same alert twice (a retried step)
  returns the incident already open instead of a second one. Records are replaced, never mutated in place.
  Times come from ``context["now"]`` when given (ISO 8601), else the UTC clock.
* ``escalation`` (level) -> the notification targets for that level.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, choice, number

LEVELS = ("info", "warning", "critical")
ACTIONS = ("open", "resolve", "list")

POLICY: dict[str, Any] = {
    "escalate_warning_after_failures": 3,
    "escalate_warning_after_s": 900,
    "targets": {
        "critical": ["on-call", "incident-channel"],
        "warning": ["team-channel"],
        "info": [],
    },
    "acknowledge_within_s": {"critical": 900, "warning": 14400, "info": None},
}

_INCIDENTS: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()  # agents run in worker threads; open/resolve are read-modify-write


def _text(params: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        expected = "a non-empty string" if required else "a string"
        raise AgentInputError(f"'{name}' must be {expected}, got {value!r}")
    return value.strip()


def _targets(level: str) -> list[str]:
    return list(POLICY["targets"][level])


# --- alert-evaluation ----------------------------------------------------------------------------------------------
def alert_evaluation(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    source = _text(params, "source")
    severity = choice(params, "severity", LEVELS)
    summary = _text(params, "summary", required=False)
    failures = number(params, "failures", minimum=0, default=0)
    duration = number(params, "duration_s", minimum=0, default=0)

    escalate = False
    if severity == "critical":
        level, reason = "critical", "critical alert"
        escalate = True
    elif severity == "warning" and failures >= POLICY["escalate_warning_after_failures"]:
        level, reason = "critical", f"warning persisted for {failures:g} failures " \
                                    f"(policy: {POLICY['escalate_warning_after_failures']})"
        escalate = True
    elif severity == "warning" and duration >= POLICY["escalate_warning_after_s"]:
        level, reason = "critical", f"warning persisted for {duration:g} s " \
                                    f"(policy: {POLICY['escalate_warning_after_s']} s)"
        escalate = True
    else:
        level, reason = severity, f"{severity} alert below the escalation thresholds"

    notify = _targets(level)
    actions = (["open_incident"] if level == "critical" else ["log"]) + [f"notify:{t}" for t in notify]
    return {
        "source": source,
        "summary": summary,
        "severity": severity,
        "level": level,
        "escalate": escalate,
        "reason": reason,
        "actions": actions,
        "notify": notify,
        "policy": copy.deepcopy(POLICY),
    }


# --- incident-management -------------------------------------------------------------------------------------------
def incident_id(source: str, summary: str) -> str:
    digest = hashlib.sha256(f"{source}\n{summary}".encode()).hexdigest()
    return f"inc-{digest[:10]}"


def _now(context: Mapping[str, Any]) -> str:
    given = context.get("now")
    if given is not None:
        if not isinstance(given, str):
            raise AgentInputError(f"context 'now' must be an ISO 8601 string, got {given!r}")
        return given
    return datetime.now(UTC).isoformat(timespec="seconds")


def _store(context: Mapping[str, Any]) -> MutableMapping[str, Any]:
    given = context.get("incidents")
    if given is None:
        return _INCIDENTS
    if not isinstance(given, MutableMapping):
        raise AgentInputError(f"context 'incidents' must be a mutable mapping, got {type(given).__name__}")
    return given


def incident_management(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    action = choice(params, "action", ACTIONS)
    store = _store(context)
    if action == "list":
        status = params.get("status")
        if status is not None and status not in ("open", "resolved"):
            raise AgentInputError(f"'status' must be one of open, resolved; got {status!r}")
        with _LOCK:
            records = [dict(r) for r in store.values() if status is None or r.get("status") == status]
        records.sort(key=lambda r: (str(r.get("opened_at", "")), str(r.get("id", ""))))
        return {"incidents": records, "count": len(records)}

    if action == "open":
        source = _text(params, "source")
        summary = _text(params, "summary", required=False)
        key = incident_id(source, summary)
        with _LOCK:
            existing = store.get(key)
            if existing is not None and existing.get("status") == "open":
                return {**dict(existing), "new": False}
            record = {"id": key, "status": "open", "source": source, "summary": summary,
                      "opened_at": _now(context),
                      "reopened": int(existing.get("reopened", 0)) + 1 if existing is not None else 0}
            store[key] = record
        return {**dict(record), "new": True}

    # resolve: by id, or by the source and summary the id derives from
    raw_id = params.get("id")
    if raw_id is not None:
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise AgentInputError(f"'id' must be a non-empty string, got {raw_id!r}")
        key = raw_id.strip()
    elif params.get("source"):
        key = incident_id(_text(params, "source"), _text(params, "summary", required=False))
    else:
        raise AgentInputError("'id' is required to resolve an incident (or the 'source' and 'summary' it was opened "
                              "with)")
    with _LOCK:
        existing = store.get(key)
        if existing is None:
            raise AgentInputError(f"'id': no incident '{key}'")
        if existing.get("status") == "resolved":
            return {**dict(existing), "new": False}
        record = {**existing, "status": "resolved", "resolved_at": _now(context)}
        store[key] = record
    return {**dict(record), "new": False}


# --- escalation ----------------------------------------------------------------------------------------------------
def escalation(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    level = choice(params, "level", LEVELS)
    return {
        "level": level,
        "targets": _targets(level),
        "acknowledge_within_s": POLICY["acknowledge_within_s"][level],
        "open_incident": level == "critical",
    }


METHODS = {
    "alert-evaluation": alert_evaluation,
    "incident-management": incident_management,
    "escalation": escalation,
}
