"""`progressive metrics`: the state store as Prometheus text exposition (format 0.0.4), for a
node_exporter textfile collector run from cron, or any scraper that reads a file.

Everything comes from the store, so the figures are those of every process that shares it:
executions and steps by status, queue depths (work queue, event-bus retry queue and DLQ, lag),
breaker states, integration and agent call metrics, and the newest health check results.
"""

from __future__ import annotations

import re
import time
from typing import Any

STATES = ("closed", "half-open", "open")
HEALTH = {"healthy": 0, "unknown": 1, "degraded": 2, "unhealthy": 3}


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP progressive_{name} {help_text}", f"# TYPE progressive_{name} {kind}"]

    def sample(self, name: str, value: float, **labels: Any) -> None:
        inner = ",".join(f'{re.sub(r"[^a-zA-Z0-9_]", "_", k)}="{_label(v)}"' for k, v in labels.items())
        self.lines.append(f"progressive_{name}{{{inner}}} {value:g}" if inner else f"progressive_{name} {value:g}")


async def exposition(store: Any) -> str:
    out = _Out()
    counts = await store.counts()
    out.family("executions", "gauge", "Workflow executions in the store, by workflow and status.")
    for row in counts["executions"]:
        out.sample("executions", row["count"], workflow=row["workflow"], status=row["status"])
    out.family("steps", "gauge", "Step records in the store, by step type and status.")
    for row in counts["steps"]:
        out.sample("steps", row["count"], type=row["type"], status=row["status"])
    out.family("work_queue_depth", "gauge", "Queued workflow runs waiting for a worker.")
    out.sample("work_queue_depth", counts["queue"])

    bus = await store.bus_status()
    for name, help_text, key in (
            ("bus_lag", "Events a subscription has not reached yet.", "lag"),
            ("bus_retry_queue_depth", "Events waiting to be retried, per subscription.", "retry_queue"),
            ("bus_dead_letters", "Events in the dead-letter queue, per subscription.", "dead_letters")):
        out.family(name, "gauge", help_text)
        for row in bus:
            out.sample(name, row[key], subscription=row["subscription"])
    out.family("bus_events_total", "counter", "Events handled by a subscription, by outcome.")
    for row in bus:
        for outcome in ("processed", "failed", "retried", "dead_lettered", "skipped"):
            out.sample("bus_events_total", row[outcome], subscription=row["subscription"], outcome=outcome)

    out.family("breaker_state", "gauge", "1 for the state each circuit breaker is in.")
    for row in await store.breakers():
        for state in STATES:
            out.sample("breaker_state", 1 if row["state"] == state else 0, breaker=row["name"], state=state)

    out.family("integration_requests_total", "counter", "Requests to each integration, by outcome.")
    rows = await store.integration_metrics()
    for row in rows:
        out.sample("integration_requests_total", row["success"], integration=row["integration"], outcome="success")
        out.sample("integration_requests_total", row["failure"], integration=row["integration"], outcome="failure")
    for name, key, help_text in (("integration_rate_limited_total", "rate_limited", "Rate-limit hits."),
                                 ("integration_retries_total", "retries", "Retried requests."),
                                 ("integration_rejected_total", "rejected", "Calls refused by an open breaker."),
                                 ("integration_breaker_opens_total", "breaker_opens", "Times the breaker opened.")):
        out.family(name, "counter", help_text)
        for row in rows:
            out.sample(name, row[key], integration=row["integration"])
    out.family("integration_latency_ms_sum", "counter", "Summed request latency, ms.")
    for row in rows:
        out.sample("integration_latency_ms_sum", round(row["latency_sum_ms"], 3), integration=row["integration"])

    out.family("agent_calls_total", "counter", "Calls to each agent instance, by outcome.")
    for row in await store.agent_metrics():
        for outcome in ("success", "failure"):
            out.sample("agent_calls_total", row[outcome], agent=row["agent"], instance=row["instance"],
                       outcome=outcome)

    latest = await store.latest_health()
    now = time.time()
    out.family("health_status", "gauge", "Newest result of each health check: 0 healthy, 1 unknown, 2 degraded, "
                                         "3 unhealthy.")
    for row in latest:
        out.sample("health_status", HEALTH.get(row["status"], 1), check=row["name"])
    out.family("health_response_ms", "gauge", "Response time of each check's newest run, ms.")
    for row in latest:
        out.sample("health_response_ms", row["response_ms"] or 0, check=row["name"])
    out.family("health_age_seconds", "gauge", "Age of each check's newest result.")
    for row in latest:
        out.sample("health_age_seconds", round(now - row["at"], 3), check=row["name"])
    return "\n".join(out.lines) + "\n"
